"""What a stub tells the student, read from the solution's own code (Python's ``ast``):

- the contract: the enclosing function's signature and its docstring's shape/return lines;
- the names the region must define because the code after it uses them (``results`` in a kernel that
  ends ``return tuple(_into(o, r) for ... results)``);
- the tail: the statements after the region in the same block (the rest of the function body or loop
  body; at module level, the rest of the notebook cell). After a ``raise`` they could never run, so the
  handout keeps them as comments to restore, not as dead code;
- for tutorials, the cell's own hint: the enclosing function's docstring, or, at module level, the
  names to compute (the registry's hints speak of library files).

``stub_context(text, region, tutorial)`` returns a StubContext; anything that does not parse (a
notebook cell with IPython magics) gives an empty one, and the stub is then the plain hint and raise.
"""

import ast
import functools
from dataclasses import dataclass, field


@dataclass
class StubContext:
    """The extra lines of one stub: contract comment lines, names to define, tail lines (1-based, inclusive)."""

    contract: list = field(default_factory=list)
    defines: list = field(default_factory=list)
    tail: tuple = None           # (first line, last line) of the statements that follow the region
    hint: str = ""               # the cell's own hint (tutorials)


_BLOCKS = ("body", "orelse", "finalbody")


def _blocks(tree):
    for node in ast.walk(tree):
        for attr in _BLOCKS:
            block = getattr(node, attr, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield node, block
        for h in getattr(node, "handlers", []) or []:
            yield h, h.body


def _names(nodes, ctx):
    out = set()
    for n in nodes:
        for sub in ast.walk(n):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ctx):
                out.add(sub.id)
    return out


def _docstring_contract(fn):
    doc = ast.get_docstring(fn) or ""
    paras = [p.strip() for p in doc.split("\n\n") if p.strip()]
    lines = [" ".join(paras[0].split())] if paras else []
    for p in paras[1:]:
        flat = " ".join(p.split())
        if any(w in flat for w in ("Returns", "returns", "(B", "shape")):
            lines.append(flat)
    args = ", ".join(a.arg for a in fn.args.args)
    return [f"{fn.name}({args}): " + (lines[0] if lines else "")] + lines[1:]


@functools.lru_cache(maxsize=64)
def _analyse(text):
    """(blocks, functions) of a source text, or None when it does not parse."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    fns = [f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return list(_blocks(tree)), fns


def stub_context(text, begin, end, *, tutorial=False, cell_end=None):
    """StubContext for the region whose marker lines are ``begin`` and ``end`` (1-based) in ``text``."""
    analysed = _analyse(text)
    ctx = StubContext()
    if analysed is None:
        return ctx
    blocks, functions = analysed
    first = min((s.lineno for _, block in blocks for s in block if begin < s.lineno < end), default=None)
    if first is None:
        return ctx
    # the region's own statements: the block holding a statement on its first code line (the outermost
    # such block, when a one-line compound statement also starts there)
    node, block = min(((n, b) for n, b in blocks for s in b if s.lineno == first),
                      key=lambda nb: next(s.col_offset for s in nb[1] if s.lineno == first))
    region = [s for s in block if begin < s.lineno < end]
    after = [s for s in block if s.lineno > end]
    if isinstance(node, ast.Module):   # a notebook cell: its own statements only, and only if they need the region
        after = [s for s in after if cell_end is None or s.lineno < cell_end]
        needed = _names(region, ast.Store)
        after = after if any(needed & _names([s], ast.Load) for s in after) else []
    if after:
        ctx.tail = (after[0].lineno, max(s.end_lineno for s in after))
    ctx.defines = sorted(_names(region, ast.Store) & _names(after, ast.Load))
    fns = [f for f in functions if f.lineno < begin < f.end_lineno]
    if fns:
        fn = max(fns, key=lambda f: f.lineno)   # the innermost function
        ctx.contract = _docstring_contract(fn)
        if tutorial:
            ctx.hint = ctx.contract[0] + ("" if len(ctx.contract) < 2 else " " + " ".join(ctx.contract[1:]))
    elif tutorial:
        what = f"compute {', '.join(ctx.defines)} (the lines after it use them)" if ctx.defines else "write this step"
        ctx.hint = f"{what}, following the derivation in the markdown cell above"
    return ctx
