"""``npvae gradcheck``: every hand-written gradient, one row each, on both backends.

The rows: the building blocks (``rows.py``), every model of ``npvae.registry`` (``models.py``, from each
model's ``gradcheck_cases``), and any check added with ``@register(name, kind, backend=...)``.
``run_suite`` runs them and returns their results; ``format_table`` prints one row per check.
"""

from npvae.backend import use_backend
from npvae.gradcheck import harness as gc
from npvae.gradcheck import models, rows
from npvae.gradcheck.rows import BACKENDS, KINDS, Check

_REGISTRY = {}   # checks added with register(), by name


def register(name, kind, *, backend=None):
    """Decorator adding a zero-argument check ``fn() -> GradcheckResult | list[GradcheckResult]``.

    name: the row name, e.g. "cubic [numba]"; kind: one of KINDS; backend: "numpy" / "numba" when the check
    pins one (``run_suite(backend=...)`` then runs it only for that backend), None otherwise.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown check kind {kind!r}; expected one of {', '.join(KINDS)}")
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)} or None")

    def decorate(fn):
        old = _REGISTRY.get(name) or next((c for c in _built_in() if c.name == name), None)
        same = old is not None and (old.fn.__module__, old.fn.__qualname__) == (fn.__module__, fn.__qualname__)
        if old is not None and not same:
            raise ValueError(
                f"a gradient check named {name!r} is already registered (by {old.fn.__module__}."
                f"{old.fn.__qualname__}); choose another name"
            )
        _REGISTRY[name] = Check(name, kind, backend, fn)  # re-importing a module replaces its own checks
        return fn

    return decorate


def _built_in():
    return rows.checks() + models.checks()


def registered():
    """All checks: the building blocks, the models, then those added with ``register``."""
    return _built_in() + list(_REGISTRY.values())


def _select(checks, names, backend):
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)} or None")
    chosen = [c for c in checks if backend is None or c.backend in (None, backend)]
    if names is None:
        return chosen
    if isinstance(names, str):
        names = [names]
    for pattern in names:
        if not any(pattern in c.name for c in chosen):
            known = "\n  ".join(c.name for c in chosen)
            raise KeyError(f"no gradient check name contains {pattern!r}; the checks are:\n  {known}")
    return [c for c in chosen if any(pattern in c.name for pattern in names)]


def run_suite(names=None, backend=None):
    """Run the registered checks and return their results, one per row.

    names: None for all, else checks whose name contains one of these strings (each must match some
    check); backend: "numpy" / "numba" to keep only the checks pinned to it plus the unpinned ones, which
    then run with it as the global backend; None for all checks on the current global backend.
    Returns list[GradcheckResult] with ``kind`` set to the registered kind.
    """
    results = []
    for check in _select(registered(), names, backend):
        try:
            if backend is None:
                out = check.fn()
            else:
                with use_backend(backend):
                    out = check.fn()
        except Exception as err:
            err.add_note(f"while running gradient check {check.name!r}")
            raise
        many = isinstance(out, (list, tuple))
        for r in out if many else [out]:
            if not isinstance(r, gc.GradcheckResult):
                raise TypeError(f"gradient check {check.name!r} returned {type(r).__name__}, not GradcheckResult")
            r.name = f"{check.name}: {r.name}" if many else check.name
            r.kind = check.kind
            results.append(r)
    return results


def format_table(results):
    """One row per result: name, kind, max relative error, tol, PASS/FAIL. Returns str."""
    headers = ("check", "kind", "max rel error", "tol", "result")
    rows = [
        (r.name, r.kind, f"{r.max_rel_error:.2e}", f"{r.tol:.0e}", "PASS" if r.passed else "FAIL")
        for r in results
    ]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    lines = [headers, tuple("-" * w for w in widths)] + rows
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


