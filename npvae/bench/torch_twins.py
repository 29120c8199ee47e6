"""The PyTorch twins of npvae's training epochs (the same models, initialisation scale, batches, Adam,
float32 and threads), for ``npvae bench``'s comparison. torch is imported only when one is built."""

import numpy as np


class _FlushDenormal:
    """Context for a PyTorch contender's epoch: with ``on``, torch.set_flush_denormal(True) while it runs
    (then back to False), so that subnormal floats count as 0 in PyTorch's arithmetic (the CPU's FTZ/DAZ
    bits, set for the calling thread: exact with --threads 1)."""

    def __init__(self, torch, on):
        self.torch, self.on = torch, on

    def __enter__(self):
        if self.on and not self.torch.set_flush_denormal(True):
            raise RuntimeError("this CPU cannot flush denormals (torch.set_flush_denormal returned False)")

    def __exit__(self, *exc):
        if self.on:
            self.torch.set_flush_denormal(False)


class TorchVAEEpoch:
    """The same VAE in PyTorch eager: Linear-ReLU-Linear encoder to [mu | logvar], reparameterised
    sample, Linear-ReLU-Linear decoder to Bernoulli logits; loss = (BCE-with-logits summed + KL) / B,
    as in npvae; W ~ U(+-1/sqrt(fan_in)) (nn.Linear's default scale), b = 0; Adam; float32.
    flush_denormal: run each epoch with torch.set_flush_denormal(True)."""

    def __init__(self, x, threads, batch_size=128, hidden=(400,), latent=20, lr=1e-3, seed=1, flush_denormal=False):
        import torch
        from torch import nn

        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.torch, self.F = torch, torch.nn.functional
        self.flush_denormal = _FlushDenormal(torch, flush_denormal)

        def mlp(sizes):
            layers = []
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
                lin = nn.Linear(a, b)
                with torch.no_grad():
                    lin.weight.uniform_(-1 / a**0.5, 1 / a**0.5)
                    lin.bias.zero_()
                layers += [lin, nn.ReLU()] if i < len(sizes) - 2 else [lin]
            return nn.Sequential(*layers)

        D = x.shape[1]
        self.encoder = mlp([D, *hidden, 2 * latent])
        self.decoder = mlp([latent, *reversed(hidden), D])
        self.latent, self.batch_size = latent, batch_size
        self.x = torch.from_numpy(np.array(x, dtype=np.float32))  # a writeable copy
        self._tensors = {}  # the slices it is asked to train on, converted once
        params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        self.optimizer = torch.optim.Adam(params, lr=lr)
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, x=None):
        """Train one epoch over x (default: all the data it was built with)."""
        torch = self.torch
        data = self.x
        if x is not None:
            key = (x.__array_interface__["data"][0], x.shape)
            if key not in self._tensors:
                self._tensors[key] = torch.from_numpy(np.array(x, dtype=np.float32))
            data = self._tensors[key]
        with self.flush_denormal:
            self._epoch(data)

    def _epoch(self, data):
        torch, F, J = self.torch, self.F, self.latent
        n = len(data)
        perm = torch.randperm(n, generator=self.gen)
        for i in range(0, n, self.batch_size):
            xb = data[perm[i:i + self.batch_size]]
            B = len(xb)
            h = self.encoder(xb)
            mu, logvar = h[:, :J], h[:, J:]
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=self.gen)
            logits = self.decoder(z)
            nll = F.binary_cross_entropy_with_logits(logits, xb, reduction="sum") / B
            kl = -0.5 * torch.sum(1 + logvar - mu * mu - torch.exp(logvar)) / B
            loss = nll + kl
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            loss.item()  # the per-step float that npvae's loop reads too (for its NaN tripwire)


class TorchM2Epoch:
    """The same M2 epoch in PyTorch eager, written as a PyTorch user would (autograd, nn.Linear).

    Classifier MLP x -> K logits; encoder MLP [x, onehot y] -> [mu | logvar]; decoder MLP [z, onehot y]
    -> Bernoulli logits; hidden activations as in npvae (softplus by default); W ~ U(+-1/sqrt(fan_in)),
    b = 0; Adam; float32 (or ``dtype``). Each step: an unlabelled batch and a labelled batch (cycling
    through the same class-balanced labelled subset as npvae), and the loss

        w mean_l[-L(x,y)] + mean_u[sum_y q(y|x) (-L(x,y)) - H(q(y|x))] + alpha mean_l[-log q(y|x)],

    -L(x,y) = BCE-with-logits summed + beta KL + log K, all K classes of the unlabelled batch in ONE stacked
    batch (rows class-major, as npvae). Like npvae's M2, the encoder's first layer is split into an x
    part and a y part, and x W_x + b is computed once per image and repeated for the K copies.
    flush_denormal: run each epoch with torch.set_flush_denormal(True).
    """

    def __init__(self, x, y, threads, batch_size=100, labels=100, labelled_batch_size=100, alpha=None, lr=None,
                 labelled_weight=None, beta=None, seed=0, n_classes=10, latent=50, hidden=(500,), cls_hidden=(500,),
                 activation="softplus", init="fan_in_uniform", dtype="float32", flush_denormal=False):
        import torch
        from torch import nn

        from npvae.training.m2 import M2TrainConfig, labelled_subset

        acts = {"softplus": nn.Softplus, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
        if activation not in acts:
            raise ValueError(f"the PyTorch M2 knows the activations {sorted(acts)}, got {activation!r}")
        if init != "fan_in_uniform":
            raise ValueError(f"the PyTorch M2 initialises with fan_in_uniform only, got init={init!r}")
        defaults = M2TrainConfig(dataset="bench")
        self.alpha = defaults.alpha if alpha is None else float(alpha)
        self.labelled_weight = defaults.labelled_weight if labelled_weight is None else float(labelled_weight)
        self.beta = defaults.beta if beta is None else float(beta)
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.torch, self.F = torch, torch.nn.functional
        self.flush_denormal = _FlushDenormal(torch, flush_denormal)
        self.dtype = getattr(torch, dtype)

        def linear(a, b, fan_in=None, bias=True):
            lin = nn.Linear(a, b, bias=bias)
            bound = 1 / (fan_in or a) ** 0.5
            with torch.no_grad():
                lin.weight.uniform_(-bound, bound)
                if bias:
                    lin.bias.zero_()
            return lin

        def mlp(sizes, act_first=False):
            layers = [acts[activation]()] if act_first else []
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
                layers += [linear(a, b), acts[activation]()] if i < len(sizes) - 2 else [linear(a, b)]
            return nn.Sequential(*layers)

        D, K, J, hidden = x.shape[1], n_classes, latent, tuple(hidden)
        self.K, self.J = K, J
        self.cls = mlp([D, *cls_hidden, K])
        self.enc_x = linear(D, hidden[0], fan_in=D + K)                # the first encoder layer, x part (+ b)
        self.enc_y = linear(K, hidden[0], fan_in=D + K, bias=False)    # ... and its y part
        self.enc_rest = mlp([hidden[0], *hidden[1:], 2 * J], act_first=True)
        self.dec = mlp([J + K, *reversed(hidden), D])
        self.net = nn.ModuleList([self.cls, self.enc_x, self.enc_y, self.enc_rest, self.dec]).to(self.dtype)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=defaults.lr if lr is None else lr)
        self.eye = torch.eye(K, dtype=self.dtype)

        l_idx = labelled_subset(y, labels, K, seed)
        mask = np.ones(len(x), bool)
        mask[l_idx] = False
        self.x_l = torch.from_numpy(np.array(x[l_idx], dtype=dtype))
        self.y_l = torch.from_numpy(np.asarray(y[l_idx], dtype=np.int64))
        self.x_u = torch.from_numpy(np.array(x[mask] if mask.any() else x[l_idx], dtype=dtype))
        self.batch_size, self.labelled_batch_size = batch_size, labelled_batch_size
        self._tensors = {}  # the slices it is asked to train on, converted once
        self._l_queue = torch.empty(0, dtype=torch.int64)
        self.gen = torch.Generator().manual_seed(seed)

    def terms(self, x_l, y_l, x_u, eps_l, eps_u):
        """(loss, labelled, unlabelled, classification) as 0-d tensors, batch means in nats.

        x_l: (B_l, D), y_l: (B_l,) int64, x_u: (B_u, D); eps_l: (B_l, J); eps_u: (K B_u, J), rows class-major
        (row y B_u + b), as npvae's ``M2.forward_backward``.
        """
        torch, F, K, J = self.torch, self.F, self.K, self.J
        B_l, B_u = len(x_l), len(x_u)
        x_cls = torch.cat([x_l, x_u])
        log_q = F.log_softmax(self.cls(x_cls), dim=1)
        log_q_u = log_q[B_l:]
        q_u = log_q_u.exp()
        Y = torch.cat([self.eye[y_l], self.eye.repeat_interleave(B_u, dim=0)])   # labelled rows, K copies
        ax = self.enc_x(x_cls)                                                    # x W_x + b, once per image
        a = torch.cat([ax[:B_l], ax[B_l:].repeat(K, 1)]) + self.enc_y(Y)
        h = self.enc_rest(a)
        mu, logvar = h[:, :J], h[:, J:]
        z = mu + torch.exp(0.5 * logvar) * torch.cat([eps_l, eps_u])
        logits = self.dec(torch.cat([z, Y], dim=1))
        X = torch.cat([x_l, x_u.repeat(K, 1)])
        nll = F.binary_cross_entropy_with_logits(logits, X, reduction="none").sum(dim=1)
        kl = -0.5 * torch.sum(1 + logvar - mu * mu - torch.exp(logvar), dim=1)
        ell = nll + self.beta * kl + float(np.log(K))                             # -L(x, y) per row
        labelled = ell[:B_l].mean()
        ell_u = ell[B_l:].reshape(K, B_u).T                                       # (B_u, K)
        unlabelled = (torch.sum(q_u * ell_u, dim=1) + torch.sum(q_u * log_q_u, dim=1)).mean()
        classification = F.nll_loss(log_q[:B_l], y_l)
        loss = self.labelled_weight * labelled + unlabelled + self.alpha * classification
        return loss, labelled, unlabelled, classification

    def _labelled_batch(self):
        need = self.labelled_batch_size
        while len(self._l_queue) < need:
            self._l_queue = self.torch.cat([self._l_queue, self.torch.randperm(len(self.x_l), generator=self.gen)])
        idx, self._l_queue = self._l_queue[:need], self._l_queue[need:]
        return idx

    def __call__(self, x=None):
        """Train one epoch over the unlabelled examples x (default: all but the labelled ones)."""
        torch = self.torch
        data = self.x_u
        if x is not None:
            key = (x.__array_interface__["data"][0], x.shape)
            if key not in self._tensors:
                self._tensors[key] = torch.from_numpy(np.array(x, dtype=np.float32)).to(self.dtype)
            data = self._tensors[key]
        with self.flush_denormal:
            self._epoch(data)

    def _epoch(self, data):
        torch = self.torch
        self._l_queue = torch.empty(0, dtype=torch.int64)
        perm = torch.randperm(len(data), generator=self.gen)
        for i in range(0, len(data), self.batch_size):
            x_u = data[perm[i:i + self.batch_size]]
            l_idx = self._labelled_batch()
            x_l, y_l = self.x_l[l_idx], self.y_l[l_idx]
            eps = torch.randn((len(x_l) + self.K * len(x_u), self.J), generator=self.gen, dtype=self.dtype)
            loss = self.terms(x_l, y_l, x_u, eps[:len(x_l)], eps[len(x_l):])[0]
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            loss.item()  # the per-step float that npvae's loop reads too (for its NaN tripwire)
