"""The house keeps its shape (docs/architecture.md): imports run one way, down the layers below; no import
loop; no module over MAX_LINES lines; the old module paths stay thin re-exports that still work."""

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "npvae"
MAX_LINES = 400

# Bottom to top. A module may import modules of its own layer or of a layer below, never above. Keep this
# table and the picture in docs/architecture.md in step (test_the_architecture_doc_names_every_module).
LAYERS = [
    ("foundation", ["npvae.validate", "npvae.fileio", "npvae.threads", "npvae.gradcheck", "npvae.gradcheck.harness"]),
    ("kernels and data", ["npvae.backend", "npvae.kernels", "npvae.kernels.*", "npvae.data", "npvae.data.*"]),
    ("numerics", ["npvae.functional", "npvae.init", "npvae.layers"]),
    ("probability and updates", ["npvae.gaussian", "npvae.likelihoods", "npvae.gumbel", "npvae.optim",
                                 "npvae.gradcheck.rows"]),
    ("models and figures", ["npvae.models", "npvae.models.*", "npvae.plots"]),
    ("training", ["npvae.training", "npvae.training.*"]),
    ("registry", ["npvae.registry", "npvae.gradcheck.models", "npvae.gradcheck.suite"]),
    ("tools", ["npvae", "npvae.cli", "npvae.cli_runs", "npvae.sweep", "npvae.runpool", "npvae.results", "npvae.executor",
               "npvae.executor.*", "npvae.bench", "npvae.bench.*", "npvae.assignment", "npvae.assignment.*"]),
    ("old paths (re-exports only)", ["npvae.checks", "npvae.datasets", "npvae.idx", "npvae.train",
                                     "npvae.semisupervised", "npvae.checkpoint", "npvae.evaluate",
                                     "npvae.gradcheck_suite", "npvae.gradcheck_models"]),
]
SHIMS = LAYERS[-1][1]


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(name):
    for i, (_, patterns) in enumerate(LAYERS):
        for pat in patterns:
            if name == pat or (pat.endswith(".*") and name.startswith(pat[:-1])):
                return i
    raise AssertionError(f"{name} is in no layer of tests/test_architecture.py: add it (and to docs/architecture.md)")


def imports_of(name):
    """The npvae modules ``name`` imports anywhere in its file (also inside functions), except its own
    parent packages (Python imports those first anyway)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t.startswith("npvae") and t != name and not name.startswith(t + "."):
                found.add(t)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def test_every_module_has_a_layer():
    for name in MODULES:
        layer_of(name)


def test_imports_run_down_the_layers_only():
    upward = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
              for a, targets in GRAPH.items() for b in targets if layer_of(b) > layer_of(a)]
    assert not upward, "imports that run back up a layer:\n  " + "\n  ".join(sorted(upward))


def test_no_module_of_the_package_imports_an_old_path():
    users = [f"{a} imports {b}" for a, targets in GRAPH.items() if a not in SHIMS for b in targets if b in SHIMS]
    assert not users, "\n".join(users)


def test_no_import_loops():
    index, low, stack, on_stack, loops = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not loops, f"import loops: {loops}"


@pytest.mark.parametrize("path", sorted(MODULES.values()) + [ROOT / "tutorials" / "_kit.py"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_over_the_line_limit(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (> {MAX_LINES}): split it by concern"


@pytest.mark.parametrize("name", SHIMS)
def test_old_paths_are_thin_re_exports(name):
    tree = ast.parse(MODULES[name].read_text())
    doc = ast.get_docstring(tree)
    assert doc and doc.startswith("Moved:"), f"{name}: its docstring says where the code lives now"
    for node in tree.body[1:]:
        ok = isinstance(node, (ast.Import, ast.ImportFrom)) or (
            isinstance(node, ast.Assign) and isinstance(node.value, ast.Name))
        assert ok, f"{name} line {node.lineno}: an old path only re-exports (imports and aliases)"


# Imports that README, tutorials, tests and users' scripts wrote before the restructuring (issue 12).
OLD_IMPORTS = [
    ("npvae.models.vae", "VAE VAEConfig ELBOTerms"), ("npvae.models.m2", "M2 M2Config one_hot"),
    ("npvae.layers", "Dense MLP ReLU Tanh"), ("npvae.gradcheck", "check_model check_layer check_gradients check_vjp "
                                                                 "check_function rel_error GradcheckResult"),
    ("npvae.gradcheck_suite", "run_suite format_table register kink_free_input randomize_biases ACTIVATION_LAYERS"),
    ("npvae.gradcheck_models", "MODEL_TOL"), ("npvae.checks", "check_array check_same_dtype"),
    ("npvae.datasets", "load_dataset dynamic_binarize fixed_binarize make_synthetic validate_unit_interval "
                       "DatasetNotFoundError ChecksumError MIRRORS CHECKSUMS FILES"),
    ("npvae.idx", "read_idx write_idx IDXError"), ("npvae.train", "TrainConfig VAETask run_training gather"),
    ("npvae.semisupervised", "M2Task SSLTrainConfig labelled_subset"),
    ("npvae.checkpoint", "load_checkpoint save_checkpoint CheckpointError atomic_write_text"),
    ("npvae.evaluate", "elbo_terms importance_log_likelihood"), ("npvae.likelihoods", "check_unit_interval"),
    ("npvae.bench", "run_bench format_report main"), ("npvae.kernels", "ACTIVATIONS activation_code KERNEL_NAMES"),
]


@pytest.mark.parametrize("module, names", OLD_IMPORTS, ids=[m for m, _ in OLD_IMPORTS])
def test_old_imports_keep_working(module, names):
    mod = importlib.import_module(module)
    missing = [n for n in names.split() if not hasattr(mod, n)]
    assert not missing, f"{module} no longer has {missing}"


def test_the_architecture_doc_names_every_module():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for name in MODULES:
        if name in SHIMS or name == "npvae" or name.endswith("__main__") or name.startswith("npvae.assignment."):
            continue  # assignment/ is one room of the tools, described in docs/assignments.md
        if MODULES[name].name == "__init__.py":
            continue
        stem = name.split(".")[-1]   # named as stem.py, or inside a {a,b,...}.py group
        named = f"{stem}.py" in doc or re.search(r"\{[^}\s]*\b%s\b[^}\s]*\}\.py" % re.escape(stem), doc)
        assert named, f"docs/architecture.md does not name {name} ({stem}.py)"
