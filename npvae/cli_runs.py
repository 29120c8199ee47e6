"""The commands that read a finished run: ``npvae eval`` (test numbers of a checkpoint) and ``npvae figures``
(its figures drawn again). Registered on the parser by ``npvae.cli``.
"""

from pathlib import Path

from npvae.threads import add_threads_option


def add_eval_parser(sub):
    p = sub.add_parser("eval", help="test negative ELBO of a checkpoint (M2: test error); log p(x) with --k",
                       description="Evaluate a run on the test set. VAE: the negative ELBO (one z sample per "
                       "example, a few seconds) and, with --k, the importance-weighted estimate of log p(x). M2: "
                       "the test classification error.")
    p.add_argument("run", help="run directory or checkpoint.npz")
    p.add_argument("--which", default="final", choices=["final", "best"],
                   help="final: the last epoch (checkpoint.npz); best: the epoch of lowest validation error "
                        "(best.npz, written by --select best-val)")
    p.add_argument("--k", type=int, default=0,
                   help="vae: also estimate test log p(x) with K importance samples per example (default 0: "
                        "skip). K = 5000 is the IWAE paper's setting: 5000 decoder passes per test image, about "
                        "10 CPU-minutes for the default run's 10,000 test images (a progress bar shows the "
                        "time left); for the default run it gives about -100.5 nats")
    p.add_argument("--n", type=int, default=None, help="evaluate only the first N test examples (default: all)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the noise z ~ q(z|x) (default: the noise of training's last test evaluation, "
                        "so the ELBO equals the last test_loss in history.csv)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads_option(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args):
    from npvae import registry
    from npvae.training.checkpoint import BEST_NAME, load_checkpoint, load_params_into

    if args.k < 0 or (args.n is not None and args.n < 1):
        raise ValueError(f"--k must be >= 0 and --n >= 1; got --k {args.k}, --n {args.n}")
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    path = run_dir / BEST_NAME if args.which == "best" else Path(args.run)
    if args.which == "best" and not path.exists():
        raise FileNotFoundError(f"{run_dir} has no {BEST_NAME}: it was trained without --select best-val "
                                "(or has no validation set); evaluate it with --which final")
    ck = load_checkpoint(path)
    trainer = registry.trainer_from_checkpoint(ck["meta"])
    load_params_into(trainer.model, ck["params"], str(path))
    n_test = min(args.n, len(trainer.x_test)) if args.n else len(trainer.x_test)
    sel = ck["meta"].get("selection")
    why = f", lowest {sel['metric']} {sel['value']:.4g}" if sel else ""
    print(f"checkpoint {path} ({trainer.model.kind}, epoch {ck['meta']['epoch']}{why}), {n_test} test examples")
    trainer.report(run_dir, k=args.k, n=args.n, seed=args.seed, epoch=ck["meta"]["epoch"],
                   progress=not args.no_progress)
    return 0


def add_figures_parser(sub):
    p = sub.add_parser("figures", help="draw a finished run's figures again, or copy some of them elsewhere",
                       description="Draw the figures of a run from its checkpoint (as npvae train does at the end). "
                       "The README's picture: npvae figures runs/vae --out docs/img --only reconstructions samples "
                       "--dpi 80, then npvae figures runs/vae2d --out docs/img --only manifold --dpi 80.")
    p.add_argument("run", help="run directory (or its checkpoint.npz)")
    p.add_argument("--out", default=None, help="where to write them (default: the run directory)")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="only these figures, by file name without .png, e.g. samples manifold (default: all)")
    p.add_argument("--dpi", type=int, default=None, help="resolution (default: npvae.plots.DPI, 120)")
    p.set_defaults(func=cmd_figures)


def _copy_png(src, dst):
    """Copy a PNG; one whose pixels are all grey is stored as 8-bit greyscale (same picture, a third the size)."""
    import numpy as np
    from PIL import Image

    img = Image.open(src).convert("RGB")
    a = np.asarray(img)
    if (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all():
        img = img.convert("L")
    img.save(dst, optimize=True)


def cmd_figures(args):
    import tempfile

    from npvae import plots, registry
    from npvae.training.checkpoint import load_checkpoint, load_params_into

    ck = load_checkpoint(args.run)
    trainer = registry.trainer_from_checkpoint(ck["meta"])
    load_params_into(trainer.model, ck["params"], args.run)
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    out = Path(args.out) if args.out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    dpi, plots.DPI = plots.DPI, args.dpi or plots.DPI
    try:
        with tempfile.TemporaryDirectory() as tmp:
            drawn = {p.stem: p for p in trainer.figures(tmp, ck["meta"]["history"])}
            missing = sorted(set(args.only or ()) - set(drawn))
            if missing:
                raise ValueError(f"{', '.join(missing)}: not a figure of this run (it has {', '.join(drawn)})")
            for name in args.only or drawn:
                _copy_png(drawn[name], out / drawn[name].name)
                print(out / drawn[name].name)
    finally:
        plots.DPI = dpi
    return 0
