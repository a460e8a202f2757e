"""The training noise ``eps ~ N(0, I)``, drawn one step ahead on a helper thread when the model is on a GPU.

The noise is drawn on the host from the model's seeded generator, so that
NumPy and CuPy runs with one seed see the same ``eps`` (notebook 09). On a
GPU a training step is bound by the host's Python, and at batch 1024 that
draw is a tenth of a step. NumPy's generator lets go of the interpreter
while it fills an array, so a helper thread can draw the next step's noise
while this step launches its kernels.

The sequence is unchanged: every draw is the one the step would have made,
in the same order, from the same generator; only its timing moves. What
must not see the draw made ahead (an undone step, a stop, a checkpoint) sees
:meth:`NoiseAhead.state`, the generator's state before it, and
:meth:`NoiseAhead.cancel` winds the generator back there. On NumPy, and
when something else draws from the generator during a step, nothing is
drawn ahead.
"""

from concurrent.futures import ThreadPoolExecutor


class NoiseAhead:
    """Each step's noise for :func:`minivae.training.fit`, the next step's drawn ahead when ``ahead`` is true."""

    def __init__(self, model, ahead):
        self.model = model
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minivae-noise") if ahead else None
        self.pending = None  # (shape, future host array, the generator's state before the draw)

    def take(self, shape, following=None):
        """This step's noise of ``shape`` on the model's device; then starts drawing the ``following`` shape.

        ``following`` is the next step's shape, or None when no step of this
        epoch follows (the epoch's end may draw from the generator itself).
        """
        if self.pending is not None and self.pending[0] != shape:
            self.cancel()  # not the draw this step needs: as if it was never made
        if self.pending is None:
            eps = self.model.draw_normal(shape)
        else:
            eps = self.model.xp.asarray(self.pending[1].result())
            self.pending = None
        if self.pool is not None and following is not None:
            rng = self.model.rng_
            state = rng.bit_generator.state
            self.pending = (following, self.pool.submit(self.model.host_normal, following, rng), state)
        return eps

    def state(self):
        """The generator's state as training sees it: before any draw made ahead."""
        return self.model.rng_.bit_generator.state if self.pending is None else self.pending[2]

    def cancel(self):
        """Forget the draw made ahead, if any, and wind the generator back to before it."""
        if self.pending is not None:
            _, future, state = self.pending
            self.pending = None
            future.exception()  # waits for the helper to finish with the generator (a failed draw changes nothing)
            self.model.rng_.bit_generator.state = state

    def close(self):
        """Cancel any draw made ahead and stop the helper thread."""
        self.cancel()
        if self.pool is not None:
            self.pool.shutdown()
