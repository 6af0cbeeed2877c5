#!/usr/bin/env bash
# Runs ferry-agent and Prometheus (agent mode) through the shared benchmark harness
# (../shared/bench, the yardstick issue #9's goals are stated on), interleaved rep by rep,
# then prints a median table (one row per agent and variant).
#
#   agent/benches/shared-harness.sh [--targets 200] [--series 2500] [--reps 3]
#       [--ferry-bin target/release/ferry-agent] [--harness ../shared/bench]
#       [--agents ferry-rw2,ferry-rw2-held,ferry-rw1,prometheus] [--hold 2] [--out FILE.jsonl]
#       [--external-labels 'cluster: bench, region: r1']
#
# Agents:
#   ferry-rw2       remote write 2.0, default queue_config (every scrape sent when it is in the WAL)
#   ferry-rw2-held  remote write 2.0, a target's scrapes held and merged, --hold of them a request:
#                   batch_send_deadline: (hold - 1) x 10 s + 5 s, max_samples_per_send: room for
#                   hold scrapes and not one more
#   ferry-rw1       remote write 1.0, default queue_config
#   prometheus      Prometheus in agent mode (`prometheus` on PATH, or $PROMETHEUS_BIN), RW 1.0
#
# --external-labels gives ferry-agent (not Prometheus) `global.external_labels`, flow-style
# YAML without the braces, as a cluster-wide deployment sets them.
#
# The harness's scrape interval is 10 s; the held agent's deadline assumes it. Each run
# takes 3-4 minutes (500k series: about 4); nothing else should run on the machine meanwhile.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
targets=200 series=2500 reps=3 hold=2
ferry_bin="$root/target/release/ferry-agent"
harness="$root/../shared/bench"
agents="ferry-rw2,ferry-rw2-held,ferry-rw1,prometheus"
out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --targets) targets=$2 ;;
    --series) series=$2 ;;
    --reps) reps=$2 ;;
    --ferry-bin) ferry_bin=$2 ;;
    --harness) harness=$2 ;;
    --agents) agents=$2 ;;
    --hold) hold=$2 ;;
    --out) out=$2 ;;
    --external-labels) export FERRY_EXTERNAL_LABELS=$2 ;;
    *) echo "shared-harness.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift 2
done
[[ -x "$ferry_bin" ]] || { echo "shared-harness.sh: no ferry-agent at $ferry_bin; cargo build --release -p ferry-agent" >&2; exit 2; }
[[ -f "$harness/run.py" ]] || { echo "shared-harness.sh: no harness at $harness (--harness DIR)" >&2; exit 2; }
out=${out:-"$(mktemp -d)/shared-harness.jsonl"}

# The harness fills {placeholders} with str.format, so a literal brace is written twice.
# A scrape is the target's series and the agent's report series (5, counted as 6).
per_scrape=$((series + 6))
# The deadline passes between a target's last held scrape and the one after it, 10 s later.
deadline=$(((hold - 1) * 10 + 5))
held="{{batch_send_deadline: ${deadline}s, max_samples_per_send: $((per_scrape * hold + per_scrape / 2)), capacity: $((per_scrape * hold * 6))}}"
wrapper="$here/shared-harness-agent.sh"
ferry_cmd="$wrapper $ferry_bin {config} {data_dir} {listen_addr} {workdir}"

# The harness builds its helpers once; the runs after it skip the build.
(cd "$harness" && ./run.sh --help >/dev/null)
export BENCH_NO_BUILD=1
IFS=, read -ra list <<<"$agents"
for rep in $(seq 1 "$reps"); do
  for agent in "${list[@]}"; do
    args=(--targets "$targets" --series "$series" --out "$out")
    echo "== rep $rep/$reps: $agent, $targets x $series" >&2
    case "$agent" in
      ferry-rw2) OURS_VERSION=$agent OURS_CMD="$ferry_cmd" "$harness/run.sh" ours --rw-version 2 "${args[@]}" >/dev/null ;;
      # The harness stops waiting for delivery once the sink's count has stood still for
      # about 4 s; held requests come further apart than that, so it starts counting
      # only after the longest hold.
      ferry-rw2-held) OURS_VERSION="$agent-$hold" OURS_CMD="$ferry_cmd '$held'" "$harness/run.sh" ours --rw-version 2 \
        --drain-min $((deadline + 10)) "${args[@]}" >/dev/null ;;
      ferry-rw1) OURS_VERSION=$agent OURS_CMD="$ferry_cmd" "$harness/run.sh" ours --rw-version 1 "${args[@]}" >/dev/null ;;
      prometheus) "$harness/run.sh" prometheus-agent "${args[@]}" >/dev/null ;;
      *) echo "shared-harness.sh: unknown agent $agent" >&2; exit 2 ;;
    esac
  done
done
echo "runs: $out" >&2
# The harness's summarize.py names a row by its agent, "ours" for every ferry variant: it
# reads a copy of the runs where each ferry run's agent is its variant.
named="${out%.jsonl}.named.jsonl"
python3 - "$out" "$named" <<'PY'
import json, sys
with open(sys.argv[1]) as src, open(sys.argv[2], "w") as dst:
    for line in src:
        r = json.loads(line)
        if r.get("agent") == "ours":
            r["agent"] = r.get("agent_version", "ours")
        dst.write(json.dumps(r) + "\n")
PY
python3 "$harness/summarize.py" "$named"
