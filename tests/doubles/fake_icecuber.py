"""TEST DOUBLE of the 2020 icecuber `run` program (top-quarks/ARC-solution), which we cannot ship.

It honours the same contract as the real program, as far as our code can see it:
- invoked as `run <index> <depth>` in a working folder;
- reads every *.json file of /kaggle/input/abstraction-and-reasoning-challenge/test/ if that folder exists,
  else of ./dataset/test/, in directory-listing order, each file named `<8 chars [a-z0-9]>.json`, one sample per
  test input; it is as strict as the real reader (only spaces and newlines between tokens, known keys, 1..30
  sides, rectangular grids) and aborts like a failed assert on anything else;
- writes ./output/answer_<index>_<depth>.csv: `<task id>_<test index>`, then up to three `|row|row| score` lines,
  or `|0| -1` when it found nothing.

Its "solution" is not a search: it answers the test input itself (top), the input turned a quarter, and a 1x1
grid of the depth's colour, so a test can tell exactly which test input an answer belongs to. The wrapper that
plays the built `run` sets FAKE_ICECUBER_BEHAVIOUR to a JSON file choosing a mode per sample:
    {"default": "normal", "depths": {"4": "hang"}, "samples": {"<task id>" or "<task id>_<test index>": "crash"}}
(`<task id>_<test index>` beats `<task id>` beats depth beats default). Modes: normal, nothing, crash, hang
(also starts a child that sleeps, to prove the whole process group dies), memory (grows until killed),
malformed (good and bad answer lines), bad-header (an answer file naming no staged task), silent (exits 0
without an answer file), slow (sleeps "slow_s" seconds, then answers).
"""

import json
import os
import re
import subprocess
import sys
import time

COMPETITION_2020_DIR = "/kaggle/input/abstraction-and-reasoning-challenge/test"
LOCAL_DIR = os.path.join(".", "dataset", "test")


def die(message: str) -> None:
    print(f"fake_icecuber: {message}", file=sys.stderr, flush=True)
    os.abort()  # the real program stops on a failed assert the same way (SIGABRT)


def check_grid(grid, where: str) -> None:
    if not isinstance(grid, list) or not 1 <= len(grid) <= 30:
        die(f"{where}: 1..30 rows expected")
    widths = {len(row) if isinstance(row, list) else -1 for row in grid}
    if len(widths) != 1 or not 1 <= widths.pop() <= 30:
        die(f"{where}: rows of one width 1..30 expected")
    if any(not isinstance(c, int) or isinstance(c, bool) for row in grid for c in row):
        die(f"{where}: integer cells expected")


def read_samples() -> list:
    folder = COMPETITION_2020_DIR if os.path.isdir(COMPETITION_2020_DIR) else LOCAL_DIR
    if not os.path.isdir(folder):
        die(f"no task folder {folder}")
    samples = []
    for name in os.listdir(folder):  # directory-listing order, as the real program's directory_iterator
        if not name.endswith(".json"):
            continue
        match = re.fullmatch(r"([a-z0-9]{8})\.json", name)
        if not match:
            die(f"{name}: file name is not an 8-character [a-z0-9] task id")
        text = open(os.path.join(folder, name)).read()
        outside_strings = re.sub(r'"[^"]*"', '""', text)
        if re.search(r"[\t\r\f\v]", outside_strings):
            die(f"{name}: only spaces and newlines may separate tokens")
        task = json.loads(text)
        if set(task) != {"train", "test"}:
            die(f"{name}: keys {sorted(task)}, expected train and test")
        for kind in ("train", "test"):
            for i, ex in enumerate(task[kind]):
                allowed = {"input", "output"}
                if not set(ex) <= allowed or "input" not in ex or (kind == "train" and "output" not in ex):
                    die(f"{name}: {kind}[{i}] has keys {sorted(ex)}")
                for key in ex:
                    check_grid(ex[key], f"{name} {kind}[{i}].{key}")
        with_outputs = sum("output" in ex for ex in task["test"])
        if with_outputs not in (0, len(task["test"])):
            die(f"{name}: some test inputs have outputs and some not")
        samples.extend((match.group(1), i, task) for i in range(len(task["test"])))
    return samples


def grid_text(grid) -> str:
    return "|" + "|".join("".join(str(c) for c in row) for row in grid) + "|"


def main() -> None:
    index, depth = int(sys.argv[1]), int(sys.argv[2])
    print(f"Running only task # {index}\nUsing max depth {depth}", flush=True)
    behaviour = {}
    if os.environ.get("FAKE_ICECUBER_BEHAVIOUR"):
        behaviour = json.load(open(os.environ["FAKE_ICECUBER_BEHAVIOUR"]))
    samples = read_samples()
    if not 0 <= index < len(samples):
        die(f"index {index} out of range (there are {len(samples)} samples)")
    task_id, test_index, task = samples[index]
    chosen = behaviour.get("samples", {})
    mode = chosen.get(f"{task_id}_{test_index}", chosen.get(task_id, behaviour.get("depths", {}).get(
        str(depth), behaviour.get("default", "normal"))))

    if mode == "crash":
        die(f"planted crash on {task_id}_{test_index}")
    if mode == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open("fake_children.txt", "a") as f:
            f.write(f"{child.pid}\n")
        while True:
            time.sleep(1)
    if mode == "memory":
        blocks = []
        while len(blocks) < 256:  # 4 GiB if nothing stops it
            blocks.append(b"\1" * (16 << 20))  # filled, so it is resident
            time.sleep(0.02)
        time.sleep(600)
    if mode == "silent":
        return
    if mode == "slow":
        time.sleep(float(behaviour.get("slow_s", 2)))

    test_input = task["test"][test_index]["input"]
    quarter_turn = [list(row) for row in zip(*test_input[::-1])]
    answers = [(test_input, 0.5 + depth / 100), (quarter_turn, 0.25), ([[depth % 10]], 0.125)]
    lines = [grid_text(g) + f" {s:.20f}" for g, s in answers]
    header = f"{task_id}_{test_index}"
    if mode == "nothing":
        lines = ["|0| -1.00000000000000000000"]
    elif mode == "malformed":
        lines = [lines[0], "|12|3| 0.9", "|1a|22| 0.8", grid_text(quarter_turn), "|00|00| nan",
                 "garbage", lines[1]]
    elif mode == "bad-header":
        header = "not a task header"
    if not os.path.isdir("output"):
        die("cannot open ./output/ for the answer file")
    with open(os.path.join("output", f"answer_{index}_{depth}.csv"), "w") as f:
        f.write(header + "\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
