"""The console's one script (console.js beside this file), served at /ui/console.js?v=<hash> with its Subresource
Integrity hash, so a page runs exactly the script it was rendered with.

What it does: keeps the page live over server-sent events (the server sends re-rendered HTML; the actions form
is replaced only when what it offers changes, keeping what was typed), and posts the actions form with fetch
(X-CSRF-Token header, JSON answer shown in place). Without it the page still works: the form posts normally
and the answer is a page.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

SCRIPT = (Path(__file__).parent / "console.js").read_bytes()
INTEGRITY = "sha384-" + base64.b64encode(hashlib.sha384(SCRIPT).digest()).decode()
VERSION = hashlib.sha256(SCRIPT).hexdigest()[:12]
