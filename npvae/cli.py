"""The ``npvae`` command: train, eval, gradcheck (and the commands later modules add).

    npvae train                      # VAE on MNIST, the PyTorch-example recipe, into runs/vae
    npvae train vae --latent 2 --epochs 20 --out runs/vae2d
    npvae train --resume --out runs/vae
    npvae eval runs/vae                # the test ELBO, in seconds
    npvae eval runs/vae --k 5000       # and the IWAE paper's log p(x) estimate, minutes
    npvae figures runs/vae --out docs/img --only samples
    npvae gradcheck
"""

import argparse
import errno
import os
import sys
import time
from pathlib import Path

from npvae.threads import add_threads_option


def _hidden(text):
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes comma-separated sizes like 400 or 200,200; got {text!r}")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--hidden sizes must be positive, got {text!r}")
    return sizes


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that states each option's default: appended as "(default: X)" unless the text already says it.
    Options whose default is None say in their own words what not giving them means; on/off flags are off."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or action.nargs == 0:
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text
        shown = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
        return f"{text} (default: {str(shown).replace('%', '%%')})"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help (and its subcommands' help) uses DefaultsFormatter."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)


def _binarize(text):
    return "none" if text in ("none", "None", "") else text


# Flags whose config field has another name; every other train flag is the field's own name. Each flag
# defaults to None, "not given": the chosen model's configs keep their defaults (npvae.registry).
FLAG_FIELDS = {"data": "dataset", "warmup": "warmup_epochs"}
NOT_CONFIG = ("model", "out", "resume", "no_figures", "no_progress", "command", "func", "threads", "split")


def _default_of(name):
    """Help text: the default of config field ``name`` for each model that has it, e.g. "vae 10, m2 30"."""
    from npvae import registry

    parts = [f"{s.kind} {_shown(d[name])}" for s in registry.SPECS if name in (d := s.defaults())]
    return "default: " + ", ".join(parts)


def _shown(value):
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def add_train_parser(sub):
    from npvae import registry

    d = _default_of
    p = sub.add_parser("train", help="train a model; writes figures, history and a checkpoint into --out")
    p.add_argument("model", nargs="?", default="vae", choices=registry.names(),
                   help="; ".join(f"{s.kind}{' (or ' + ', '.join(s.aliases) + ')' if s.aliases else ''}: {s.help}"
                                  for s in registry.SPECS) + " (default vae)")
    p.add_argument("--data", default=None, help="mnist | fashion-mnist | synthetic (default mnist)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (" + d("epochs") + "; with --resume: extend the run to this many)")
    p.add_argument("--batch-size", type=int, default=None, help="examples per step (m2: the unlabelled batch; " + d("batch_size") + ")")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (" + d("lr") + ")")
    p.add_argument("--lr-decay", type=float, default=None,
                   help="multiply the learning rate by this after every epoch, in (0, 1] (" + d("lr_decay") + "; 1: constant)")
    p.add_argument("--weight-decay", type=float, default=None, help="decoupled (AdamW) weight decay (default 0)")
    p.add_argument("--hidden", type=_hidden, default=None, help="hidden sizes, e.g. 400 or 200,200 (" + d("hidden") + ")")
    p.add_argument("--latent", type=int, default=None, help="latent size (" + d("latent") + ")")
    p.add_argument("--activation", default=None, choices=["relu", "leaky_relu", "tanh", "sigmoid", "softplus"],
                   help="hidden-layer activation (" + d("activation") + ")")
    p.add_argument("--init", default=None,
                   choices=["fan_in_uniform", "he_normal", "he_uniform", "glorot_normal", "glorot_uniform"],
                   help="weight initialisation (default fan_in_uniform: W ~ U(+-1/sqrt(fan_in)), b = 0)")
    p.add_argument("--likelihood", default=None, choices=["bernoulli", "gaussian"], help="decoder likelihood: vae, and m2 (gaussian: real-valued inputs) (default bernoulli)")
    p.add_argument("--obs-logvar", type=float, default=None,
                   help="fixed log-variance of a Gaussian decoder (default: learned per pixel)")
    p.add_argument("--binarize", type=_binarize, default=None, choices=["none", "fixed", "dynamic"],
                   help="pixels as targets: none (continuous pixels as Bernoulli targets), fixed, or dynamic (resampled each "
                        "epoch; " + d("binarize") + ")")
    p.add_argument("--beta", type=float, default=None,
                   help="weight of the KL term of z (1: the ELBO; " + d("beta") + ")")
    p.add_argument("--warmup", type=float, default=None, help="epochs over which beta ramps from 0 (default 0)")
    p.add_argument("--eval-k", type=int, default=None,
                   help="vae: after training, estimate test log p(x) with this many importance samples (default 0: "
                        "skip; see npvae eval --help for its cost)")
    g = p.add_argument_group("m2 (ssvae)")
    g.add_argument("--labels", type=int, default=None, help="size of the class-balanced labelled subset (default 100)")
    g.add_argument("--alpha", type=float, default=None,
                   help="weight of the classification loss (" + d("alpha") + "; see docs/m2.md for its scale)")
    g.add_argument("--estimator", default=None, choices=["enumerate", "gumbel"],
                   help="unlabelled term: enumerate y (exact, the default) or sample it with Gumbel-Softmax")
    g.add_argument("--temperature", type=float, default=None, help="Gumbel-Softmax temperature (default 0.5)")
    g.add_argument("--labelled-batch-size", type=int, default=None,
                   help="labelled examples paired with each unlabelled batch (default 100)")
    g.add_argument("--labelled-weight", type=float, default=None,
                   help="weight of the labelled ELBO term against the unlabelled one (per-example means; "
                        "default 0.1)")
    g.add_argument("--balance", type=float, default=None,
                   help="weight of the label-balance term balance * KL(mean q(y|x) over the unlabelled batch || "
                        "uniform), >= 0 (" + d("balance") + ", chosen on validation error; 0: off; see docs/m2.md)")
    g.add_argument("--shift", type=int, default=None,
                   help="move each labelled image by up to this many pixels (random, afresh each time it is "
                        "drawn; square images only; default: m2 2 for 28 x 28 images, else 0; m1m2 0; 0: off; "
                        "see docs/m2.md)")
    g.add_argument("--labels-seed", type=int, default=None,
                   help="seed of the labelled subset (default: --seed), to train one subset from other weights")
    g.add_argument("--cls-hidden", type=_hidden, default=None, help="classifier hidden sizes (default 500)")
    p.add_argument("--n-train", type=int, default=None, help="use only the first N training examples (default: all)")
    v = p.add_argument_group("validation (every hyperparameter and checkpoint choice is made on it, never on test)")
    v.add_argument("--val-size", type=int, default=None,
                   help="training images held out for validation, class-stratified; 0: none (default: m2 10000, "
                        "or a sixth of a training set smaller than 60,000; vae 0)")
    v.add_argument("--val-seed", type=int, default=None,
                   help="seed of the validation split, independent of --seed: the same images for every labelled "
                        "subset and seed (default 0)")
    v.add_argument("--select", default=None, choices=["final", "best-val"],
                   help="best-val: also keep best.npz, the epoch of lowest validation error (vae: negative ELBO); "
                        "final: the last epoch only (default: m2 best-val, vae final)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the initial weights, the minibatch order and the noise (" + d("seed") + ")")
    p.add_argument("--backend", default=None, choices=["numba", "numpy"],
                   help="kernel backend (default: $NPVAE_BACKEND or numba)")
    _add_setting_flags(p)
    p.add_argument("--out", default=None, help="run directory (default runs/<model>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    p.add_argument("--no-figures", action="store_true", help="write no figures (checkpoints and history only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (the per-epoch lines stay)")
    add_threads_option(p)
    p.add_argument("--split", choices=["units", "batch"], default=None,
                   help="VAE only, for two free cores (Linux x86-64): two processes, one thread each, share the two "
                        "big layers (units; Bernoulli VAE) or each batch (batch) (default: one process)")
    p.add_argument("--split-batch", action="store_const", const="batch", dest="split", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_train, model=None)  # None: not named (vae for a new run, the saved kind on --resume)


def given_settings(args):
    """{config field: value} of every train flag given on the command line."""
    given = {FLAG_FIELDS.get(k, k): v for k, v in vars(args).items() if k not in NOT_CONFIG and v is not None}
    if given.get("binarize") == "none":
        given["binarize"] = None
    return given


def _flag(field):
    return "--" + {f: k for k, f in FLAG_FIELDS.items()}.get(field, field).replace("_", "-")


def trainer_for_resume(args, out, log=print):
    """The saved run's trainer for ``--resume``, or None when it has already trained every epoch asked for.

    The model named on the command line must be the saved one; --epochs applies; any other flag that
    differs from the saved run is an error listing them (the saved run continues exactly as it was set up,
    or not at all), and one that agrees is accepted.
    """
    from npvae import registry
    from npvae.fileio import RunLock
    from npvae.training.checkpoint import CheckpointError, load_checkpoint, write_views
    from npvae.training.loop import write_history

    meta = load_checkpoint(out)["meta"]
    if args.model is not None and registry.get(args.model).kind != meta["kind"]:
        raise CheckpointError(f"{out} holds a {meta['kind']} run, not a {registry.get(args.model).kind} run; "
                              f"resume it with `npvae train {meta['kind']} --resume --out {out}`, or train "
                              f"{args.model} into another --out")
    saved = {**meta["config"]["model"], **meta["config"]["train"]}
    differ = [f"{_flag(k)} {_shown(v)} (saved: {_shown(saved.get(k))})" for k, v in given_settings(args).items()
              if k != "epochs" and _shown(v) != _shown(saved.get(k))]
    if differ:
        raise ValueError(f"--resume continues {out} with its saved settings, but these flags differ from them: "
                         f"{'; '.join(differ)}. Drop them (only --epochs may change), or start a new run "
                         "with another --out")
    epochs = args.epochs or meta["config"]["train"]["epochs"]
    if meta["epoch"] >= epochs:
        with RunLock(out):
            write_views(out, meta, write_history)  # if a kill left config/history behind the checkpoint
        log(f"{out}: {meta['epoch']}/{epochs} epochs done, nothing to train; add --epochs M (M > {meta['epoch']}) "
            f"to train longer, e.g. npvae train --resume --out {out} --epochs {2 * meta['epoch']}")
        return None
    return registry.trainer_from_checkpoint(meta, args.epochs)


def _add_setting_flags(p):
    """A flag for every config field of a registered model that has none above (so a new model's settings
    reach the command line without editing this file): --field-name, typed by the field's default."""
    from npvae import registry

    taken = {a.dest for a in p._actions} | set(FLAG_FIELDS.values()) | {"x_dim", "n_classes"}
    extra = {}
    for spec in registry.SPECS:
        for name, default in spec.defaults().items():
            if name not in taken:
                extra.setdefault(name, (default, []))[1].append(spec.kind)
    if extra:
        g = p.add_argument_group("other settings of the registered models")
        for name, (default, kinds) in extra.items():
            kind = (_hidden if isinstance(default, tuple) else
                    (lambda t: t.lower() in ("1", "true", "yes")) if isinstance(default, bool) else
                    type(default) if default is not None else str)
            g.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                           help=f"{', '.join(kinds)} (default {_shown(default)})")


def trainer_from_args(args):
    """A fresh trainer from the command line: each given flag sets the config field of its name."""
    from npvae import registry

    spec = registry.get(args.model or "vae")
    given = given_settings(args)
    unknown = [n for n in given if n not in spec.settings()]
    if unknown:
        flag = {field: f for f, field in FLAG_FIELDS.items()}
        raise ValueError(", ".join("--" + flag.get(n, n).replace("_", "-") for n in unknown)
                         + f" does not apply to {spec.kind}")
    return spec.trainer(*spec.configs(**given))


def cmd_train(args):
    from npvae.fileio import RunLock
    from npvae.training.loop import run_training

    out = Path(args.out or f"runs/{args.model or 'vae'}")
    t0 = time.perf_counter()
    if args.resume:
        trainer = trainer_for_resume(args, out)
        if trainer is None:
            return 0
    else:
        trainer = trainer_from_args(args)
    if args.split:
        enable_split(trainer, args.split, args.threads)
    model = trainer.model
    nets = ", ".join(f"{n} {net.sizes}" for n, net in vars(model).items() if hasattr(net, "sizes"))
    print(f"npvae train {model.kind}: {len(trainer.x_train)} training examples; {nets}; out {out}", flush=True)
    with RunLock(out):  # figures and finish write into the run too
        history = run_training(trainer, out, resume=args.resume, progress=not args.no_progress and None)
        wall = time.perf_counter() - t0
        if not args.no_figures:
            paths = trainer.figures(out, history)
            print("figures: " + ", ".join(str(p) for p in paths))
        if hasattr(trainer, "close"):
            trainer.close()   # --split: its second process is not needed after the last epoch
        trainer.finish(out, progress=not args.no_progress)
    best = out / "best.npz"
    print(f"done in {wall:.1f}s; checkpoint {out / 'checkpoint.npz'}"
          + (f", validation-selected {best} (npvae eval {out} --which best)" if best.exists() else ""))
    return 0


def enable_split(trainer, mode, threads):
    """``--split units|batch``: the trainer runs every step on two processes (ValueError where it cannot)."""
    from npvae.threads import set_threads
    from npvae.training.split import available

    if trainer.model.kind != "vae":
        raise ValueError(f"--split {mode} applies to the VAE only, not {trainer.model.kind}; drop it")
    if threads not in (None, 1):
        raise ValueError(f"--split {mode} runs one thread in each of its two processes; drop --threads")
    from npvae.training.split_units import unsupported

    why = available() or (unsupported(trainer.model) if mode == "units" else "")
    if why:
        raise ValueError(why)
    set_threads(1)
    trainer.split_batch, trainer.split_units = mode == "batch", mode == "units"


def add_gradcheck_parser(sub):
    p = sub.add_parser("gradcheck", help="check every hand-written gradient against central differences")
    p.add_argument("names", nargs="*", help="only the checks whose name contains one of these (default: all)")
    p.add_argument("--backend", default=None, choices=["numba", "numpy"],
                   help="check one kernel backend (default: both)")
    p.set_defaults(func=cmd_gradcheck)


def cmd_gradcheck(args):
    from npvae.gradcheck.suite import format_table, run_suite

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
    parser = Parser(prog="npvae", description="Variational autoencoders from scratch in NumPy.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    from npvae.cli_runs import add_eval_parser, add_figures_parser

    add_eval_parser(sub)
    add_figures_parser(sub)
    add_gradcheck_parser(sub)
    from npvae.bench import add_bench_parser
    from npvae.sweep import add_sweep_parser

    add_sweep_parser(sub)
    add_bench_parser(sub)
    from npvae.assignment import add_assignment_parsers

    add_assignment_parsers(sub)
    return parser


def interrupted_message(args, argv=()):
    """What Ctrl-C left behind, and the exact command that continues, for each command."""
    if args.command == "train":
        out = Path(args.out or f"runs/{args.model or 'vae'}")
        if not (out / "checkpoint.npz").exists():
            return "interrupted before the first epoch finished; nothing to resume: run the same command again"
        more = f" --epochs {args.epochs}" if args.epochs else ""
        return (f"interrupted; {out / 'checkpoint.npz'} keeps the last completed epoch. Continue with: "
                f"npvae train --resume --out {out}{more}")
    if args.command == "sweep":
        return ("interrupted; finished runs are kept and unfinished ones keep their last epoch. Continue with "
                "the same npvae sweep command: npvae " + " ".join(argv))
    if args.command == "eval":
        return "interrupted; the checkpoint is unchanged and nothing was written"
    if args.command == "bench":
        return "interrupted; no report was written (run the same npvae bench command again)"
    return "interrupted"


_OS_HINTS = {errno.EACCES: "check its permissions, or choose another location (--out)",
             errno.EPERM: "check its permissions, or choose another location (--out)",
             errno.EROFS: "the file system is read-only: choose another location (--out)",
             errno.ENOSPC: "the disk is full: free some space, or choose another location (--out)",
             errno.EDQUOT: "the disk quota is used up: free some space, or choose another location (--out)",
             errno.ENOENT: "check the path"}


def os_error_message(e):
    """One line for an OSError: what failed, on which file, and what to do."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    what = e.strerror or str(e)
    return f"{what}{': ' + where if where else ''}; {_OS_HINTS.get(e.errno, 'check the path and try again')}"


def main(argv=None):
    from npvae.fileio import RunLockedError
    from npvae.threads import ThreadsError, set_threads

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if os.environ.get("NPVAE_DEBUG"):
        if hasattr(args, "threads") and args.command != "bench":
            set_threads(args.threads)
        return args.func(args)
    try:
        if hasattr(args, "threads") and args.command != "bench":  # bench sets (and checks) its own
            set_threads(args.threads)
        return args.func(args)
    except KeyboardInterrupt:
        print(interrupted_message(args, argv), file=sys.stderr)
        return 130
    except (ValueError, TypeError, FloatingPointError, RunLockedError, ThreadsError) as e:
        print(f"npvae: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # ours carry a message and no errno; the system's get what, where, what to do
        print(f"npvae: error: {e if e.errno is None else os_error_message(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
