"""Memory per GPU for distillation with DDP and with FSDP: counted, not guessed (docs/training.md).

    python benchmarks/memory_table.py           # prints the table; writes benchmarks/results/memory_table.json

Parameter counts come from the project's one counter (`subnas.count_parameters`) on the published
full-size configs (no weights: a config is all the counter reads). Bytes per parameter follow what
`subnas distill` holds (`subnas.training._fsdp`): the student in float32 with its gradients and
AdamW's two moments (16 B), the teacher in float32 without gradients (4 B). Under FSDP each of
``world`` GPUs holds ``1/world`` of that, plus the weights it gathers while a layer runs — in bf16
(2 B) on a GPU: the running and the prefetched decoder layer of the student, whose root (embeddings,
head) stays gathered from forward to backward, or of the teacher, which is re-sharded after its
forward. Activations (a micro-batch's hidden states and logits) come on top and depend on
``--micro-batch-size`` and ``--seq-len``; they are not in the table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from subnas import SubNetwork, SubnasConfig, count_parameters

HERE = Path(__file__).resolve().parent
GIB = 2**30

# Published shapes (their config.json on the Hugging Face Hub), as SubnasConfig keyword arguments.
TEACHERS = {
    "Llama-3.2-1B": SubnasConfig(family="llama", vocab_size=128256, hidden_size=2048, num_hidden_layers=16,
                                 num_attention_heads=32, num_key_value_heads=8, head_dim=64, intermediate_size=8192,
                                 tie_word_embeddings=True),
    "Llama-3.1-8B": SubnasConfig(family="llama", vocab_size=128256, hidden_size=4096, num_hidden_layers=32,
                                 num_attention_heads=32, num_key_value_heads=8, head_dim=128, intermediate_size=14336,
                                 tie_word_embeddings=False),
}
# Students: about half the teacher. The 8B's is Minitron's 4B width prune (hidden 3072, MLP 9216).
STUDENTS = {
    "Llama-3.2-1B": SubNetwork(n_embd=1536, intermediate_size=4096),
    "Llama-3.1-8B": SubNetwork(n_embd=3072, intermediate_size=9216),
}
WORLDS = (1, 8, 16)  # one GPU, one node of 8, two nodes of 8


def layer_parameters(config: SubnasConfig, subnet: SubNetwork | None = None) -> tuple[int, int]:
    """(one decoder layer, the root: embeddings + head + final norm) of ``subnet`` of ``config``."""
    one = count_parameters(config, SubNetwork(n_layers=1) if subnet is None else
                           SubNetwork(**{**subnet.to_dict(), "n_layers": 1}))
    two = count_parameters(config, SubNetwork(n_layers=2) if subnet is None else
                           SubNetwork(**{**subnet.to_dict(), "n_layers": 2}))
    layer = two - one
    return layer, one - layer


def table() -> list[dict[str, Any]]:
    rows = []
    for name, config in TEACHERS.items():
        subnet = STUDENTS[name]
        nt, ns = count_parameters(config), count_parameters(config, subnet)
        t_layer, t_root = layer_parameters(config)
        s_layer, s_root = layer_parameters(config, subnet)
        state = 16 * ns + 4 * nt
        gathered = max(2 * 2 * s_layer + 2 * s_root, 2 * 2 * t_layer + 2 * t_root)  # bf16, current + prefetched layer
        row: dict[str, Any] = {"teacher": name, "teacher_parameters": nt, "student": subnet.to_dict(),
                               "student_parameters": ns, "ddp_gib": state / GIB}
        for world in WORLDS[1:]:
            row[f"fsdp_{world}_gib"] = (state / world + gathered) / GIB
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| teacher | student | DDP, per GPU | FSDP, 8 GPUs (1 node), per GPU | FSDP, 16 GPUs (2 nodes), per GPU |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['teacher']} ({r['teacher_parameters'] / 1e9:.2f}B) | {r['student_parameters'] / 1e9:.2f}B "
                     f"`{json.dumps(r['student'])}` | {r['ddp_gib']:.1f} GiB | {r['fsdp_8_gib']:.1f} GiB | "
                     f"{r['fsdp_16_gib']:.1f} GiB |")
    return "\n".join(lines)


def main() -> None:
    rows = table()
    out = HERE / "results" / "memory_table.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "python benchmarks/memory_table.py", "rows": rows}, indent=1) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
