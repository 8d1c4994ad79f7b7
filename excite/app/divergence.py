"""Stopping a training run that diverges: a loss that is not finite, or one that explodes."""
import math


class DivergenceGuard:
    """Spots a diverging run: a non-finite loss, or a smoothed loss that climbs far above its lowest value.

    "Far" is in units of the loss of a uniform guess, ln(number of classes): a healthy run rarely rises
    above three of them from its best, while a learning rate that is too high does within a few steps.
    """

    SMOOTHING = 0.3  # weight of the newest batch in the running loss

    def __init__(self, num_classes, state=None):
        self.unit = math.log(max(2, num_classes))
        self.smoothed, self.lowest = (None, math.inf) if state is None else (state["smoothed"], state["lowest"])

    def state(self):
        return dict(smoothed=self.smoothed, lowest=self.lowest)

    def check(self, loss):
        """None while the run is healthy, else why it is not."""
        if not math.isfinite(loss):
            return f"the loss became {loss}"
        self.smoothed = loss if self.smoothed is None else (1 - self.SMOOTHING) * self.smoothed + self.SMOOTHING * loss
        self.lowest = min(self.lowest, self.smoothed)
        if self.smoothed > 3 * self.unit and self.smoothed > self.lowest + 3 * self.unit:
            return f"the loss exploded (smoothed {self.smoothed:.3g}, lowest {self.lowest:.3g})"
        return None
