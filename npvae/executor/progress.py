"""Live progress of ``run_all`` through tqdm: runs done / running / failed, the best and worst so far."""

from npvae.executor.core import Event


class Progress:
    """An ``on_event`` for ``run_all``: a tqdm bar of finished tasks whose postfix reads
    ``running 2, failed 0, best 4.10 (label), worst 6.20 (label)``. ``score(result)`` is the number to rank
    (lower is better unless ``higher_is_better``); ``label(spec)`` names a task; ``log(text)`` prints
    retries and failures above the bar."""

    def __init__(self, total, score=None, label=str, desc="runs", unit="run", higher_is_better=False,
                 enabled=True):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled or None)
        self.score, self.label, self.sign = score, label, (-1 if higher_is_better else 1)
        self.best = self.worst = None
        self.lines = []

    def _rank(self, value, spec):
        key = (self.sign * value, self.label(spec), value)
        self.best = key if self.best is None or key[0] < self.best[0] else self.best
        self.worst = key if self.worst is None or key[0] > self.worst[0] else self.worst

    def postfix(self, event):
        parts = [f"running {event.running}", f"failed {event.failed}"]
        for name, key in (("best", self.best), ("worst", self.worst)):
            if key is not None:
                parts.append(f"{name} {key[2]:.4g} ({key[1]})")
        return ", ".join(parts)

    def say(self, text):
        self.lines.append(text)
        self.bar.write(text)

    def __call__(self, event: Event):
        if event.kind == "done":
            if self.score is not None:
                self._rank(self.score(event.result), event.spec)
            self.bar.update(1)
        elif event.kind == "failed":
            self.bar.update(1)
            self.say(f"{self.label(event.spec)}: failed after {event.attempt} attempt(s): {event.error}")
        elif event.kind == "retry":
            self.say(f"{self.label(event.spec)}: {event.error}; trying again (attempt {event.attempt})")
        self.bar.set_postfix_str(self.postfix(event))

    def close(self):
        self.bar.close()
