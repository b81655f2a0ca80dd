"""GitOps write-back: the release's image or Helm value committed to the app's repository (git.py, yamledit.py)."""
