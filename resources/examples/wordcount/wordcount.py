"""One shard of a word count over the shipped texts/ folder.

PoolNet sets POOLNET_SHARD and POOLNET_SHARDS; this shard takes every SHARDS-th file of the
sorted list starting at SHARD and writes out/counts-SHARD.json: words per file and the most
common words of its slice. Standard library only.
"""

import collections
import json
import os
import re
from pathlib import Path

WORD = re.compile(r"[a-z']+")


def count_words(path: Path) -> collections.Counter[str]:
    return collections.Counter(WORD.findall(path.read_text(encoding="utf-8").lower()))


def main() -> None:
    shard = int(os.environ["POOLNET_SHARD"])
    shards = int(os.environ["POOLNET_SHARDS"])
    texts = sorted(Path("texts").glob("*.txt"))[shard::shards]
    total: collections.Counter[str] = collections.Counter()
    per_file = {}
    for path in texts:
        counts = count_words(path)
        per_file[path.name] = sum(counts.values())
        total.update(counts)
    out = Path("out")
    out.mkdir(exist_ok=True)
    result = {"shard": shard, "files": per_file, "top": total.most_common(10)}
    (out / f"counts-{shard}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"shard {shard}/{shards}: {len(texts)} files, {sum(total.values())} words")


if __name__ == "__main__":
    main()
