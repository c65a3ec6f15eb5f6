"""Progress of long transfers on the command line: one tqdm line on stderr with rate and ETA."""

import sys


class UploadBar:
    """A ``progress(done, total)`` callback for Device.upload, drawn from its first report:
    nothing is shown when the device already holds everything. ``close()`` ends the line."""

    def __init__(self, name):
        self.name, self.bar = name, None

    def __call__(self, done, total):
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                            desc=f"[upload] {self.name}", leave=True, mininterval=0.5)
        self.bar.update(done - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
