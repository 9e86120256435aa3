"""Render copier templates on request, in one process, so copier is imported once.

Importing copier costs about 2 s of CPU; a render of this template about 0.3 s. The matrix
renders ~18 projects, so the harness keeps one of these processes and sends it requests, one
JSON object per line on stdin:

    {"src": ..., "dst": ..., "data": {...}, "ref": "HEAD" | null, "log": "/path/render.log"}

and reads one JSON line per request back on stdout: {"ok": true|false, "error": "..."}.
Everything copier prints goes to the request's log. Requests are handled one at a time
(copier changes the process's working directory while it renders).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
import warnings


def main() -> None:
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but responses on the real stdout
    import copier

    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        ok, error = True, ""
        with (
            open(request["log"], "a", encoding="utf-8") as log,
            contextlib.redirect_stdout(log),
            contextlib.redirect_stderr(log),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("always")
            warnings.showwarning = lambda msg, cat, *_a, **_k: print(f"{cat.__name__}: {msg}")
            try:
                copier.run_copy(
                    request["src"],
                    request["dst"],
                    data=request["data"],
                    defaults=True,
                    unsafe=False,
                    vcs_ref=request["ref"],
                    quiet=False,
                )
            except BaseException as exc:  # report everything, keep serving
                ok, error = False, f"{type(exc).__name__}: {exc}"
                traceback.print_exc(file=log)
            finally:
                with contextlib.suppress(OSError):
                    os.chdir(request.get("cwd") or "/")
        out.write(json.dumps({"ok": ok, "error": error}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
