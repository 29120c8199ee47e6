"""Solution markers: finding the marked regions of a source file and writing its student version.

Syntax (comment lines on their own, so the solution tree runs unchanged):

    <indent># BEGIN SOLUTION <id> [<id> ...]
    <indent>    ...solution lines, indented at least as deep as the marker...
    <indent># END SOLUTION [<id> ...]

A region belongs to one task, or to several when one piece of code serves them all (a fused kernel);
it is stubbed when any of its tasks is selected. Regions do not nest. When a task is selected its
regions become, at the BEGIN marker's indentation,

    # TODO Task 2.3 (reparameterisation backward): <hint>
    raise NotImplementedError("Task 2.3: reparameterisation backward")

and when it is not, only the two marker lines are removed. Anything that looks like a marker but is
not exactly one of the two forms is an error naming the file and line: an unclosed BEGIN, a BEGIN
inside an open region, an END without a BEGIN, an unknown or repeated task id, an empty region, an END
at another indentation or naming other tasks, a solution line less indented than its marker.

Only comments are markers: the same text inside a string or docstring is ignored (Python's tokenizer
decides).
"""

import functools
import io
import re
import textwrap
import tokenize
from dataclasses import dataclass, field

from npvae.assignment.tasks import TASK_ID_PATTERN

# anything that looks like an attempt at a marker (checked strictly afterwards)
_MARKER_LIKE = re.compile(r"#+\s*(BEGIN|END)[\s_-]*SOLUTION", re.IGNORECASE)
_BEGIN = re.compile(rf"# BEGIN SOLUTION((?: {TASK_ID_PATTERN})+)")
_END = re.compile(rf"# END SOLUTION((?: {TASK_ID_PATTERN})*)")


class MarkerError(ValueError):
    """A malformed solution marker; the message names the file and line."""


@dataclass
class Region:
    """One marked region: its tasks, where its markers are (1-based lines), its indentation and body."""

    path: str
    ids: tuple
    begin: int
    end: int
    indent: str
    body: list = field(default_factory=list)  # the solution lines, without line endings


@functools.lru_cache(maxsize=256)   # a build tokenizes each file up to three times
def _comment_lines(text):
    """{line number: comment text} for every comment that stands alone on its line.

    Uses the tokenizer, so '# BEGIN SOLUTION' inside a string is not a comment. Falls back to a plain
    line scan when the text does not tokenize (e.g. a notebook cell with IPython magics).
    """
    found = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT and tok.line.strip() == tok.string.strip():
                found[tok.start[0]] = tok.string.strip()
    except (tokenize.TokenError, IndentationError, SyntaxError):
        found = {i: ln.strip() for i, ln in enumerate(text.splitlines(), 1) if ln.lstrip().startswith("#")}
    return found


def find_regions(text, path, known_ids):
    """The marked regions of ``text`` (the contents of ``path``); MarkerError on any malformed marker.

    known_ids: the task ids of the registry (a marker naming another id is an error). Returns [Region].
    """
    lines = text.splitlines()
    regions, errors, current = [], [], None

    def err(lineno, msg):
        errors.append(f"{path}:{lineno}: {msg}")

    for lineno, comment in sorted(_comment_lines(text).items()):
        if not _MARKER_LIKE.match(comment):
            continue
        line = lines[lineno - 1]
        indent = line[: len(line) - len(line.lstrip())]
        begin, end = _BEGIN.fullmatch(comment), _END.fullmatch(comment)
        if begin:
            ids = tuple(begin.group(1).split())
            if current is not None:
                err(lineno, f"BEGIN SOLUTION inside the region opened at line {current.begin} "
                            "(regions do not nest; close it with '# END SOLUTION' first)")
                continue
            unknown = [i for i in ids if i not in known_ids]
            if unknown:
                err(lineno, f"unknown task {', '.join(unknown)}; the registry (npvae/assignment/tasks.py) "
                            f"defines {', '.join(sorted(known_ids)) or 'no tasks'}")
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            if repeated:
                err(lineno, f"task {', '.join(repeated)} listed twice in one BEGIN SOLUTION marker")
            current = Region(path, ids, lineno, 0, indent)
        elif end:
            if current is None:
                err(lineno, "END SOLUTION without a BEGIN SOLUTION before it")
                continue
            end_ids = tuple(end.group(1).split())
            if end_ids and end_ids != current.ids:
                err(lineno, f"END SOLUTION names task {' '.join(end_ids)} but the region opened at line "
                            f"{current.begin} is for task {' '.join(current.ids)}")
            if indent != current.indent:
                err(lineno, f"END SOLUTION is indented {len(indent)} columns but its BEGIN SOLUTION "
                            f"(line {current.begin}) {len(current.indent)}; align them")
            current.end = lineno
            current.body = lines[current.begin:lineno - 1]
            if not any(b.strip() for b in current.body):
                err(current.begin, "empty solution region (nothing between BEGIN and END SOLUTION)")
            for k, b in enumerate(current.body, current.begin + 1):
                if b.strip() and not b.startswith(current.indent):
                    err(k, f"solution line is less indented than its BEGIN SOLUTION marker (line "
                           f"{current.begin}); indent the marker like the code it encloses")
                    break
            regions.append(current)
            current = None
        else:
            err(lineno, f"malformed solution marker {comment!r}; expected '# BEGIN SOLUTION <task id> "
                        "[<task id> ...]' or '# END SOLUTION' alone on a line, e.g. '# BEGIN SOLUTION 2.3'")
    if current is not None:
        err(current.begin, "BEGIN SOLUTION is never closed (add '# END SOLUTION' after the solution)")
    if errors:
        raise MarkerError("malformed solution markers:\n  " + "\n  ".join(errors))
    return regions


def stub_lines(region, selected, tasks, context=None):
    """The lines that replace a selected region: the TODO with its hint, the contract, and the raise.

    context: a ``npvae.assignment.contracts.StubContext`` (the enclosing function's contract, the names
    the code after the region needs, a tutorial cell's own hint), or None.
    """
    chosen = [i for i in region.ids if i in selected]
    task = tasks[chosen[0]]
    also = [i for i in region.ids if i != task.id]
    note = f" (this code is shared with task {', '.join(also)})" if also else ""
    hint = context.hint if context is not None and context.hint else task.hint
    width = max(40, 100 - len(region.indent)) - 2
    out = textwrap.wrap(f"TODO Task {task.id} ({task.title}){note}: {hint}", width)
    if context is not None and not context.hint and context.contract:
        contract = textwrap.wrap("Contract: " + " ".join(context.contract), width, subsequent_indent="  ")
        if len(contract) > 4:   # a long docstring: its start, and where to read the rest
            contract = textwrap.wrap(" ".join(contract[:4])[: 4 * width - 60] + " ... (see the docstring)", width,
                                     subsequent_indent="  ")
        out += contract
    if context is not None and context.defines:
        out += textwrap.wrap(f"Your code must set: {', '.join(context.defines)} (used by the lines after it).", width)
    out = [f"{region.indent}# {ln}" for ln in out]
    out.append(f'{region.indent}raise NotImplementedError("{task.message}")')
    return out


TAIL_HEADER = "# Replace the raise above with your code, then uncomment the lines below (they use it):"


def _commented(line, indent):
    body = line.rstrip("\r\n")
    if not body.strip():
        return body
    cut = len(indent) if body.startswith(indent) else len(body) - len(body.lstrip())
    return f"{body[:cut]}# {body[cut:]}"


def transform(text, regions, selected, tasks, contexts=None):
    """``text`` with each region stubbed (any of its tasks in ``selected``) or unmarked (kept, markers removed).

    regions: find_regions(text, ...); tasks: {id: Task}; contexts: {region.begin: StubContext}. The
    statements that follow a stubbed region in its block (its context's tail) are commented out, so no
    unreachable code follows the raise. Line endings and a final newline are kept.
    """
    contexts = contexts or {}
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    starts = [r.begin for r in regions]
    out, i, comment_until, indent = [], 0, 0, ""

    def copy(upto):
        nonlocal i
        for n in range(i, upto):   # n: 0-based index of line n + 1
            out.append(_commented(lines[n], indent) + newline if n + 1 <= comment_until else lines[n])
        i = max(i, upto)

    for r in regions:
        copy(r.begin - 1)
        if any(t in selected for t in r.ids):
            ctx = contexts.get(r.begin)
            out.extend(ln + newline for ln in stub_lines(r, selected, tasks, ctx))
            tail = ctx.tail if ctx is not None else None
            if tail and not any(tail[0] <= b <= tail[1] for b in starts):
                out.append(f"{r.indent}{TAIL_HEADER}{newline}")
                comment_until, indent = tail[1], r.indent
        else:
            out.extend(lines[r.begin:r.end - 1])
        i = r.end
    copy(len(lines))
    return "".join(out)


def normalise(line):
    """A line reduced for comparison: whitespace collapsed, a trailing comment dropped ("" for blank)."""
    s = line.strip()
    if not s.startswith("#"):
        s = _strip_trailing_comment(s)
    return " ".join(s.split())


def _strip_trailing_comment(s):
    quote = None
    for k, ch in enumerate(s):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return s[:k].rstrip()
    return s
