#!/usr/bin/env python3
"""A numpy port of the published SparseGPT layer pruner (sparsegpt.py of
IST-DASLab/sparsegpt: SparseGPT.add_batch and SparseGPT.fasterprune), kept
line-for-line close to the original, in float32 like the original.

usage: sparsegpt_ref.py W.npy X.npy (--sparsity S | --pattern N:M) [--blocksize B]
                        [--damp F] [--batch T] [--out OUT.npy]

W is (rows, cols), X is (tokens, cols).  Prints the relative output error
||(W - Wp) X^T||^2 / ||W X^T||^2 (float64) of the pruned weights Wp.
"""
import argparse
import sys
import time

import numpy as np


class SparseGPT:
    def __init__(self, W):
        self.W = W.astype(np.float32)
        self.rows, self.columns = W.shape
        self.H = np.zeros((self.columns, self.columns), dtype=np.float32)
        self.nsamples = 0

    def add_batch(self, inp):
        # inp is (tokens, cols): one "sample" per batch, as the scaling only rescales H
        tmp = 1
        inp = inp.T.astype(np.float32)
        self.H *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        inp = np.float32(np.sqrt(2 / self.nsamples)) * inp
        self.H += inp @ inp.T

    def fasterprune(self, sparsity, prunen=0, prunem=0, blocksize=128, percdamp=0.01):
        W = self.W.copy()
        H = self.H
        del self.H
        dead = np.diag(H) == 0
        H[dead, dead] = 1
        W[:, dead] = 0

        Losses = np.zeros(self.rows, dtype=np.float32)

        damp = percdamp * np.mean(np.diag(H))
        diag = np.arange(self.columns)
        H[diag, diag] += damp
        L = np.linalg.cholesky(H)                       # torch.linalg.cholesky(H)
        Linv = np.linalg.inv(L).astype(np.float32)      # torch.cholesky_inverse(H)
        H = Linv.T @ Linv
        H = np.linalg.cholesky(H).T.astype(np.float32)  # torch.linalg.cholesky(H, upper=True)
        Hinv = H

        for i1 in range(0, self.columns, blocksize):
            i2 = min(i1 + blocksize, self.columns)
            count = i2 - i1

            W1 = W[:, i1:i2].copy()
            Q1 = np.zeros_like(W1)
            Err1 = np.zeros_like(W1)
            Losses1 = np.zeros_like(W1)
            Hinv1 = Hinv[i1:i2, i1:i2]

            if prunen == 0:
                tmp = W1 ** 2 / (np.diag(Hinv1).reshape((1, -1))) ** 2
                thresh = np.sort(tmp.flatten())[int(tmp.size * sparsity)]
                mask1 = tmp <= thresh
            else:
                mask1 = np.zeros(W1.shape, dtype=bool)

            for i in range(count):
                w = W1[:, i]
                d = Hinv1[i, i]

                if prunen != 0 and i % prunem == 0:
                    tmp = W1[:, i:(i + prunem)] ** 2 / (np.diag(Hinv1)[i:(i + prunem)].reshape((1, -1))) ** 2
                    idx = np.argsort(tmp, axis=1, kind="stable")[:, :prunen]  # topk(largest=False)
                    np.put_along_axis(mask1, i + idx, True, axis=1)

                q = w.copy()
                q[mask1[:, i]] = 0

                Q1[:, i] = q
                Losses1[:, i] = (w - q) ** 2 / d ** 2

                err1 = (w - q) / d
                W1[:, i:] -= np.outer(err1, Hinv1[i, i:])
                Err1[:, i] = err1

            W[:, i1:i2] = Q1
            Losses += np.sum(Losses1, 1) / 2

            W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]

        return W, float(np.sum(Losses))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights")
    ap.add_argument("inputs")
    ap.add_argument("--sparsity", type=float, default=None)
    ap.add_argument("--pattern", default=None)
    ap.add_argument("--blocksize", type=int, default=128)
    ap.add_argument("--damp", type=float, default=0.01)
    ap.add_argument("--batch", type=int, default=128, help="tokens per add_batch call")
    ap.add_argument("--out", default=None)
    ap.add_argument("--time", action="store_true",
                    help="print the Hessian and pruning seconds and skip the error")
    a = ap.parse_args()
    prunen = prunem = 0
    if a.pattern:
        prunen, prunem = (int(v) for v in a.pattern.split(":"))
    sparsity = a.sparsity if a.sparsity is not None else 0.0
    W = np.load(a.weights)
    X = np.load(a.inputs)
    if W.ndim != 2 or X.ndim != 2 or W.shape[1] != X.shape[1]:
        sys.exit("sparsegpt_ref.py: expected W (rows, cols) and X (tokens, cols), found %s and %s"
                 % (W.shape, X.shape))
    g = SparseGPT(W)
    t0 = time.perf_counter()
    for t in range(0, X.shape[0], a.batch):
        g.add_batch(X[t:t + a.batch])
    t1 = time.perf_counter()
    Wp, loss = g.fasterprune(sparsity, prunen, prunem, a.blocksize, a.damp)
    t2 = time.perf_counter()
    if a.time:
        print("hessian_s %.3f prune_s %.3f" % (t1 - t0, t2 - t1))
        return
    if a.out:
        np.save(a.out, Wp)
    X64 = X.astype(np.float64)
    num = np.sum(((W.astype(np.float64) - Wp) @ X64.T) ** 2)
    den = np.sum((W.astype(np.float64) @ X64.T) ** 2)
    print("%.9e %.6e %.6f" % (num / den, loss, float(np.mean(Wp == 0))))


if __name__ == "__main__":
    main()
