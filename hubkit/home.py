"""Where hubkit keeps its data by default: ``default_home()``.

::

    from hubkit.home import default_home
    default_home() / "hubkit.db"      # the default store file

The rule, first match wins:

1. ``$HUBKIT_HOME`` when it is set and not empty (``~`` is expanded);
2. the platform's cache folder for hubkit, as ``platformdirs`` names it: on Linux and the
   BSDs ``$XDG_CACHE_HOME/hubkit`` (``~/.cache/hubkit`` when ``XDG_CACHE_HOME`` is unset), on
   macOS ``~/Library/Caches/hubkit``, on Windows ``%LOCALAPPDATA%\\hubkit\\Cache``.

The environment is read at each call (no module state), so a test or a notebook may change
it between calls. Nothing is created: callers that write make the folder themselves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

__all__ = ["HOME_VARIABLE", "default_home"]

#: The environment variable that overrides the default home.
HOME_VARIABLE: Final = "HUBKIT_HOME"


def default_home() -> Path:
    """The folder of hubkit's default store: ``$HUBKIT_HOME``, else the platform's cache
    folder for hubkit (``$XDG_CACHE_HOME/hubkit`` on Linux). An absolute path, not created."""
    explicit = os.environ.get(HOME_VARIABLE)
    if explicit:
        return Path(explicit).expanduser().absolute()
    # Imported here: only callers that need the platform folder pay for the import.
    import platformdirs

    return platformdirs.user_cache_path("hubkit", appauthor=False).absolute()
