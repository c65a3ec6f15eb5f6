"""What the command line's commands share: messages on stderr and opening the target."""

import sys

DEFAULT_TIMEOUT = 5.0      # --timeout: seconds for any single reply


def err(msg):
    print(msg, file=sys.stderr, flush=True)


def open_device(args):
    from driver.device import Device
    return Device.open(args.target, csr=args.csr, timeout=args.timeout or DEFAULT_TIMEOUT, progress=err)


def open_any(args):
    """open_device, or the golden model for --target golden."""
    from driver.device import Device
    if args.target == "golden":
        return Device.open("golden")
    return open_device(args)
