"""Generators of shipped data: the auto-split frontier (qssm/app/qlam_frontier.json) and the
README's model card and paper table. Rerun them when a checkpoint or the transpiler changes."""
