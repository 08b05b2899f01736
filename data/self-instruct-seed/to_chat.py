"""Write seed_tasks.chat.jsonl (chat layout, one {"messages": [...]} per task) from seed_tasks.jsonl.

User turn = instruction, plus a blank line and the input when the input is not empty; assistant turn = output.
The task's id, name and is_classification ride along as extra keys (kept in the record's `meta` on ingest).
Run from anywhere: `python data/self-instruct-seed/to_chat.py`.
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    lines = []
    for raw in (HERE / "seed_tasks.jsonl").read_text(encoding="utf-8").splitlines():
        task = json.loads(raw)
        (inst,) = task["instances"]
        user = task["instruction"] + (f"\n\n{inst['input']}" if inst["input"].strip() else "")
        lines.append(json.dumps({"messages": [{"role": "user", "content": user},
                                              {"role": "assistant", "content": inst["output"]}],
                                 "id": task["id"], "name": task["name"],
                                 "is_classification": task["is_classification"]}, ensure_ascii=False))
    (HERE / "seed_tasks.chat.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
