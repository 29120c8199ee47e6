"""The ``npvae`` command: train, eval, gradcheck (and the commands later modules add).

    npvae train                      # VAE on MNIST, the PyTorch-example recipe, into runs/vae
    npvae train vae --latent 2 --epochs 20 --out runs/vae2d
    npvae train --resume --out runs/vae
    npvae eval runs/vae --k 5000
    npvae gradcheck
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _hidden(text):
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes comma-separated sizes like 400 or 200,200; got {text!r}")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--hidden sizes must be positive, got {text!r}")
    return sizes


def _binarize(text):
    return "none" if text in ("none", "None", "") else text


# Defaults that differ between the models; None on the command line means "the model's default". The
# other training settings left unset (batch size, lr, beta, binarisation, seed, alpha, ...) take the
# defaults of TrainConfig (vae) or SSLTrainConfig (ssvae).
MODEL_DEFAULTS = {
    "vae": dict(epochs=10, hidden=(400,), latent=20, activation="relu"),
    "ssvae": dict(epochs=30, hidden=(500,), latent=50, activation="softplus"),
}
TRAIN_FLAGS = ("batch_size", "lr", "beta", "seed")
SSL_FLAGS = ("alpha", "labelled_weight")


def add_train_parser(sub):
    p = sub.add_parser("train", help="train a model; writes figures, history and a checkpoint into --out")
    p.add_argument("model", nargs="?", default="vae", choices=["vae", "ssvae"],
                   help="vae (default) or ssvae, the semi-supervised M2 model")
    p.add_argument("--data", default="mnist", help="mnist | fashion-mnist | synthetic (default mnist)")
    p.add_argument("--epochs", type=int, default=None, help="vae 10, ssvae 30")
    p.add_argument("--batch-size", type=int, default=None, help="vae 128; ssvae 100 (the unlabelled batch)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (vae 1e-3, ssvae 3e-3)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="decoupled (AdamW) weight decay")
    p.add_argument("--hidden", type=_hidden, default=None, help="hidden sizes, e.g. 400 or 200,200 "
                   "(vae 400, ssvae 500)")
    p.add_argument("--latent", type=int, default=None, help="latent size (vae 20, ssvae 50)")
    p.add_argument("--activation", default=None, choices=["relu", "leaky_relu", "tanh", "sigmoid", "softplus"],
                   help="vae relu, ssvae softplus")
    p.add_argument("--init", default="fan_in_uniform",
                   choices=["fan_in_uniform", "he_normal", "he_uniform", "glorot_normal", "glorot_uniform"],
                   help="weight initialisation (default fan_in_uniform: W ~ U(+-1/sqrt(fan_in)), b = 0)")
    p.add_argument("--likelihood", default="bernoulli", choices=["bernoulli", "gaussian"], help="vae only")
    p.add_argument("--obs-logvar", type=float, default=None,
                   help="fixed log-variance of a Gaussian decoder (default: learned per pixel)")
    p.add_argument("--binarize", type=_binarize, default=None, choices=["none", "fixed", "dynamic"],
                   help="none (continuous pixels as Bernoulli targets), fixed, or dynamic (resampled each "
                        "epoch); vae none, ssvae dynamic")
    p.add_argument("--beta", type=float, default=None,
                   help="weight of the KL term of z (1: the ELBO); vae 1, ssvae 2")
    p.add_argument("--warmup", type=float, default=0.0, help="vae: epochs over which beta ramps from 0")
    p.add_argument("--eval-k", type=int, default=0,
                   help="vae: after training, estimate test log p(x) with this many importance samples")
    g = p.add_argument_group("ssvae (M2)")
    g.add_argument("--labels", type=int, default=100, help="size of the class-balanced labelled subset")
    g.add_argument("--alpha", type=float, default=None,
                   help="weight of the classification loss (default 5; see the README for its scale)")
    g.add_argument("--estimator", default="enumerate", choices=["enumerate", "gumbel"],
                   help="unlabelled term: enumerate y (exact) or sample it with Gumbel-Softmax")
    g.add_argument("--temperature", type=float, default=0.5, help="Gumbel-Softmax temperature")
    g.add_argument("--labelled-batch-size", type=int, default=100)
    g.add_argument("--labelled-weight", type=float, default=None,
                   help="weight of the labelled ELBO term against the unlabelled one (per-example means; "
                        "default 0.1)")
    g.add_argument("--cls-hidden", type=_hidden, default=(500,), help="classifier hidden sizes")
    p.add_argument("--n-train", type=int, default=None, help="use only the first N training examples")
    p.add_argument("--seed", type=int, default=None, help="vae 1, ssvae 0")
    p.add_argument("--backend", default=None, choices=["numba", "numpy"],
                   help="kernel backend (default: $NPVAE_BACKEND or numba)")
    p.add_argument("--out", default=None, help="run directory (default runs/<model>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)


def _task_from_args(args):
    """A fresh VAETask or M2Task from the command line."""
    from npvae.models.m2 import M2Config
    from npvae.models.vae import VAEConfig
    from npvae.semisupervised import M2Task, SSLTrainConfig
    from npvae.train import TrainConfig, VAETask

    d = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in MODEL_DEFAULTS[args.model].items()}
    given = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None}
    if args.binarize is not None:
        given["binarize"] = None if args.binarize == "none" else args.binarize
    common = dict(dataset=args.data, epochs=d["epochs"], weight_decay=args.weight_decay, n_train=args.n_train,
                  backend=args.backend, **given)
    if args.model == "vae":
        tc = TrainConfig(**common, warmup_epochs=args.warmup, eval_k=args.eval_k)
        mc = VAEConfig(hidden=d["hidden"], latent=d["latent"], activation=d["activation"],
                       likelihood=args.likelihood, obs_logvar=args.obs_logvar, init=args.init)
        return VAETask(mc, tc)
    tc = SSLTrainConfig(**common, labels=args.labels, labelled_batch_size=args.labelled_batch_size,
                        estimator=args.estimator, temperature=args.temperature,
                        **{k: getattr(args, k) for k in SSL_FLAGS if getattr(args, k) is not None})
    mc = M2Config(hidden=d["hidden"], cls_hidden=args.cls_hidden, latent=d["latent"], activation=d["activation"],
                  init=args.init)
    return M2Task(mc, tc)


def task_from_checkpoint(meta, epochs=None):
    """Rebuild the task a checkpoint was saved from (its saved configs), optionally with new epochs."""
    from npvae.models.m2 import M2Config
    from npvae.models.vae import VAEConfig
    from npvae.semisupervised import M2Task, SSLTrainConfig
    from npvae.train import TrainConfig, VAETask

    cfg = meta["config"]
    train = {**cfg["train"], **({"epochs": epochs} if epochs else {})}
    if meta["kind"] == "vae":
        return VAETask(VAEConfig(**cfg["model"]), TrainConfig.from_dict(train))
    return M2Task(M2Config(**cfg["model"]), SSLTrainConfig.from_dict(train))


def cmd_train(args):
    from npvae.checkpoint import load_checkpoint
    from npvae.train import run_training

    out = Path(args.out or f"runs/{args.model}")
    t0 = time.perf_counter()
    if args.resume:
        task = task_from_checkpoint(load_checkpoint(out)["meta"], args.epochs)
    else:
        task = _task_from_args(args)
    model = task.model
    nets = ", ".join(f"{n} {getattr(model, n).sizes}" for n in ("classifier", "encoder", "decoder")
                     if hasattr(model, n))
    print(f"npvae train {model.kind}: {len(task.x_train)} training examples; {nets}; out {out}", flush=True)
    if hasattr(task, "save_labelled_indices"):
        out.mkdir(parents=True, exist_ok=True)
        task.save_labelled_indices(out)
    history = run_training(task, out, resume=args.resume, progress=not args.no_progress and None)
    wall = time.perf_counter() - t0
    if not args.no_figures:
        paths = task.figures(out, history)
        print("figures: " + ", ".join(str(p) for p in paths))
    if getattr(task.train_config, "eval_k", 0):
        _report_log_likelihood(task.model, task.x_test, task.train_config.eval_k, out,
                               progress=not args.no_progress)
    print(f"done in {wall:.1f}s; checkpoint {out / 'checkpoint.npz'}")
    return 0


def _report_log_likelihood(model, x, k, out, progress=True, seed=0):
    import numpy as np

    from npvae.checkpoint import atomic_write_text
    from npvae.evaluate import importance_log_likelihood

    t0 = time.perf_counter()
    ll, _ = importance_log_likelihood(model, x, k=k, rng=np.random.default_rng(seed), progress=progress and None)
    secs = time.perf_counter() - t0
    print(f"test log p(x) (importance-weighted, k={k}): {ll:.3f} nats per example ({secs:.0f}s)")
    if out is not None:
        atomic_write_text(Path(out) / f"loglik_k{k}.json",
                          json.dumps({"k": k, "log_likelihood": ll, "n": len(x), "seconds": secs}) + "\n")
    return ll


def add_eval_parser(sub):
    p = sub.add_parser("eval", help="test negative ELBO and importance-weighted log-likelihood of a checkpoint")
    p.add_argument("run", help="run directory or checkpoint.npz")
    p.add_argument("--k", type=int, default=5000, help="importance samples for log p(x) (0 to skip)")
    p.add_argument("--n", type=int, default=None, help="evaluate only the first N test examples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args):
    import numpy as np

    from npvae.checkpoint import load_checkpoint, load_params_into
    from npvae.evaluate import elbo_terms

    ck = load_checkpoint(args.run)
    task = task_from_checkpoint(ck["meta"])
    model = task.model
    load_params_into(model, ck["params"], args.run)
    x_test, y_test = task.x_test, task.y_test
    if args.n:
        x_test, y_test = x_test[: args.n], y_test[: args.n]
    print(f"checkpoint {args.run} ({model.kind}, epoch {ck['meta']['epoch']}), {len(x_test)} test examples")
    if model.kind == "m2":
        err = 100.0 * np.mean(model.predict(x_test) != y_test)
        print(f"test classification error: {err:.2f}%")
        return 0
    t = elbo_terms(model, x_test, np.random.default_rng(args.seed))
    print(f"test negative ELBO: {t.loss:.3f} nats per example (reconstruction {t.nll:.3f}, KL {t.kl:.3f})")
    if args.k:
        run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
        _report_log_likelihood(model, x_test, args.k, run_dir if args.n is None else None,
                               progress=not args.no_progress, seed=args.seed)
    return 0


def add_gradcheck_parser(sub):
    p = sub.add_parser("gradcheck", help="check every hand-written gradient against central differences")
    p.add_argument("names", nargs="*", help="only the checks whose name contains one of these")
    p.add_argument("--backend", default=None, choices=["numba", "numpy"])
    p.set_defaults(func=cmd_gradcheck)


def cmd_gradcheck(args):
    from npvae.gradcheck_suite import format_table, run_suite

    results = run_suite(args.names or None, backend=args.backend)
    print(format_table(results))
    failed = [r for r in results if not r.passed]
    if failed:
        print(f"\n{len(failed)} of {len(results)} checks FAILED:")
        for r in failed:
            print(str(r))
        return 1
    print(f"\nall {len(results)} checks passed")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="npvae", description="Variational autoencoders from scratch in NumPy.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    add_eval_parser(sub)
    add_gradcheck_parser(sub)
    from npvae.bench import add_bench_parser
    from npvae.sweep import add_sweep_parser

    add_sweep_parser(sub)
    add_bench_parser(sub)
    from npvae.assignment import add_assignment_parsers

    add_assignment_parsers(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if os.environ.get("NPVAE_DEBUG"):
        return args.func(args)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted; the last completed epoch's checkpoint is kept (continue with --resume)",
              file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileExistsError, FileNotFoundError, FloatingPointError) as e:
        print(f"npvae: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
