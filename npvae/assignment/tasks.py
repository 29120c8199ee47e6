"""The assignment's task registry: the one place that defines every task.

A task is a numbered exercise (``"2.3"``) with a title, a hint and the pytest marker of its checks
(``@pytest.mark.task("2.3")``); its points come from the grading configuration
(``npvae.assignment.config``). Source code marks each task's solution with comment lines

    # BEGIN SOLUTION 2.3
    ...the solution...
    # END SOLUTION

(see ``npvae.assignment.markers``); ``npvae assignment build`` replaces the selected tasks' regions by
``raise NotImplementedError("Task 2.3: reparameterisation backward")``.

INSTRUCTOR_ONLY lists the tracked files a handout never contains: the hidden tests, the assignment's
own tests, the instructors' guide, CI, and test files whose reference computations would give a task
away (left out only when that task is selected).
"""

from dataclasses import dataclass

TASK_ID_PATTERN = r"\d+\.\d+"


@dataclass(frozen=True)
class Task:
    """One exercise: id "part.number", title, points (from the grading configuration), a hint for the student."""

    id: str
    title: str
    points: float
    hint: str

    @property
    def marker(self):
        """The pytest marker its tests carry, as written in a test file."""
        return f'@pytest.mark.task("{self.id}")'

    @property
    def message(self):
        """The NotImplementedError message of its stub."""
        return f"Task {self.id}: {self.title}"


# id, title, hint (the points are in the grading configuration, npvae/assignment/grading.toml)
TASK_TEXT = (
    ("1.1", "activation backward",
         "da = dh * f'(a) for relu, leaky_relu, tanh, sigmoid and softplus (identity is done). Take tanh' "
         "and sigmoid' from the cached output h; softplus' is the sigmoid, computed without overflow. Both "
         "kernel files: npvae/kernels/reference.py (NumPy) and npvae/kernels/_loops.py (Numba)."),
    ("1.2", "dense layer backward",
         "With da = dh * f'(a): dW = x^T da, db = sum over the batch of da, dx = da W^T (skip dx when "
         "need_dx is False). Shapes: dW like W, db like b. Both kernel files (in fast.py the products after "
         "the region are given: compute da and db there), and the encoder's shared first layer in "
         "npvae/models/m2_encoder.py (its dW_x is given)."),
    ("2.1", "Bernoulli log-likelihood gradient",
         "d/dl [softplus(l) - x l] = sigmoid(l) - x, times the row's weight row_scale[b]. Use the stable "
         "sigmoid helpers of each kernel file; never log(sigmoid)."),
    ("2.2", "Gaussian KL gradient",
         "Differentiate KL = -1/2 sum_j (1 + logvar - mu^2 - e^logvar) with respect to mu and logvar, and "
         "scale each row by row_scale[b]. Both kernel files."),
    ("2.3", "reparameterisation backward",
         "z = mu + exp(logvar / 2) * eps: dz/dmu = 1 and dz/dlogvar = eps * exp(logvar / 2) / 2. The cache "
         "holds eps and sigma (npvae/gaussian.py)."),
    ("2.4", "Gaussian log-likelihood gradient",
         "Gradients of 1/2 sum_d (log 2 pi + v + (x - m)^2 e^-v) with respect to the mean m and the "
         "log-variance v, each row scaled by row_scale[b]; a (D,) logvar shared by the batch gets the sum "
         "over rows (npvae/likelihoods.py)."),
    ("3.1", "Adam step",
         "Kingma & Ba, Algorithm 1: update m and v in place, bias-correct them with 1 - beta^t, then "
         "p -= lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * p). Both kernel files; keep the arrays' "
         "dtype."),
    ("4.1", "categorical cross-entropy gradient",
         "d/dl [logsumexp(l) - l_y] = softmax(l) - onehot(y), scaled per row; in npvae/likelihoods.py and "
         "for M2's alpha-weighted classification term in npvae/models/m2.py."),
    ("4.2", "M2 enumeration backward",
         "The gradient of the unlabelled term with respect to the classifier logits a, with "
         "log q = log_softmax(a): chain d(-U)/d log q through log-softmax (npvae/models/m2.py); in Gumbel "
         "mode add the path through the relaxed sample y~ (gumbel_softmax_backward gives d loss / d log q)."),
    ("4.3", "Gumbel-Softmax backward",
         "y~ = softmax(s) with s = (log q + g) / tau: the softmax Jacobian-vector product "
         "y~ * (dy - sum_k y~_k dy_k), divided by tau (npvae/gumbel.py)."),
)



def registry(config=None):
    """The tasks with their points from the grading configuration (default: npvae/assignment/grading.toml)."""
    from npvae.assignment.config import load_config

    cfg = config if config is not None else load_config(known_tasks=[t[0] for t in TASK_TEXT])
    return tuple(Task(i, title, cfg.points[i], hint) for i, title, hint in TASK_TEXT)


TASKS = registry()

# path (a file, or a directory ending in "/") -> None (always left out) or the task ids whose selection
# leaves it out, with the reason.
INSTRUCTOR_ONLY = {
    "tests/hidden/": (None, "hidden tests, run only by the grader"),
    "tests/test_assignment.py": (None, "tests of the assignment tooling; they need the solutions"),
    "tests/test_grader_exploits.py": (None, "tests of the grader against hostile submissions"),
    "tests/test_grading_tools.py": (None, "tests of the Gradescope and bulk-grading tools"),
    "tests/assignment_helpers.py": (None, "helpers of the assignment tooling's tests"),
    "docs/assignments.md": (None, "the instructors' guide (grading, hidden checks, the threat model)"),
    ".ci/": (None, "the solution repository's CI"),
    "tests/test_optim.py": (("3.1",), "checks Adam against a plain-Python reference implementation"),
    "tests/test_gaussian.py": (("2.3",), "checks the reparameterisation gradient against its formula"),
}


def check_registry(tasks):
    """Raise ValueError naming the problem unless ids are well formed and unique and points are >= 0."""
    import re

    seen = set()
    for t in tasks:
        if not isinstance(t, Task):
            raise ValueError(f"task registry: expected Task entries, found {t!r}")
        if not re.fullmatch(TASK_ID_PATTERN, t.id):
            raise ValueError(f"task registry: task id {t.id!r} is not of the form <part>.<number>, e.g. 2.3")
        if t.id in seen:
            raise ValueError(f"task registry: duplicate task id {t.id!r}; every task needs its own id")
        if not t.points >= 0:
            raise ValueError(f"task registry: task {t.id} has negative points {t.points}")
        seen.add(t.id)
    return {t.id: t for t in tasks}


def task_map(tasks=None):
    """{id: Task} of the given tasks (default: TASKS), validated."""
    return check_registry(TASKS if tasks is None else tasks)
