#!/usr/bin/env python3
"""Read a run folder's TensorBoard event files with TensorBoard's own reader and print what they
hold as JSON: every scalar tag's (step, value) list and every image tag's (step, width, height,
PNG size, PNG magic ok). `tests/tensorboard.rs` compares it with the trainer's printed losses.

    pip install tensorboard
    python3 scripts/read_tensorboard.py runs/X
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main():
    acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    out = {
        "scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]},
        "images": {
            t: [[e.step, e.width, e.height, len(e.encoded_image_string),
                 e.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"] for e in acc.Images(t)]
            for t in tags["images"]
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
