"""Shared test set-up: never reach a model hub, keep torch to the machine's 2 cores."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SOFTSEG_OFFLINE", "1")
