"""The HTML report renders in headless Chromium without console errors, with every plot loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HAYSTACK = ROOT / "checkpoints" / "qmamba-haystack.safetensors"
CHROMIUM = "/usr/bin/chromium"
# the flags this machine's closed network needs (no background connections, no sandbox as root)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def test_report_renders_in_headless_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    spec = tmp_path / "spec.toml"
    spec.write_text(f'[model]\ncheckpoint = "{HAYSTACK}"\n[data]\nn = 4\n[backend]\nname = "aer"\nshots = 500\n')
    p = subprocess.run([sys.executable, "-m", "qssm.cli", "report", str(spec), "--out", str(tmp_path / "rep"),
                        "--targets", "aer:fake_fez,aer:fake_sherbrooke", "--shots", "200,800", "--sweep"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    page_path = tmp_path / "rep" / "report.html"
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1024, "height": 768})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        plots = page.eval_on_selector_all(
            "img.plot", "imgs => imgs.map(i => [i.alt, i.complete && i.naturalWidth > 0 && i.naturalHeight > 0])")
        headings = page.eval_on_selector_all("h2", "hs => hs.map(h => h.textContent)")
        columns = page.eval_on_selector_all("th", "ths => ths.map(h => h.textContent)")
        # the page fits its width: no table (the transpilation table above all) overflows it
        widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        browser.close()
    assert errors == []
    titles = [alt for alt, _ in plots]
    assert all(ok for _, ok in plots), plots
    for expected in ("Transpiled depth per template and target", "Accuracy against shots",
                     "Logit error against token position", "aer:fake_fez: qubits used (red)"):
        assert expected in titles, titles
    assert any("noisy" in t.lower() for t in titles)
    for section in ("Run", "Transpilation per target", "Accuracy against shots", "Cost and round trips", "Provenance"):
        assert section in headings, headings
    assert widths[0] <= widths[1], widths
    assert not [c for c in columns if "_" in c and ":" not in c], columns  # human names, no raw keys
    for human in ("physical qubits", "2q gates", "P(success)", "cutting", "± s.e."):
        assert human in columns, columns


def test_device_graph_uses_the_devices_real_coordinates():
    """Heavy-hex at IBM's published coordinates: every coupler joins grid neighbours (a scrambled
    layout would not), and the used qubits are marked."""
    from qssm.commands.report import device_layouts

    [fez] = device_layouts([{"target": "dm:fake_fez", "layout": [3, 4, 5, 16]}])
    coords = fez["coordinates"]
    assert fez["num_qubits"] == len(coords) == 156 and fez["used"] == [3, 4, 5, 16]
    assert all(abs(coords[a][0] - coords[b][0]) + abs(coords[a][1] - coords[b][1]) == 1 for a, b in fez["edges"])
    [garnet] = device_layouts([{"target": "dm:iqm_garnet", "layout": [0, 1]}])
    assert garnet["coordinates"] is None and garnet["num_qubits"] == 20  # drawn force-directed
