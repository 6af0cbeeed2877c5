#!/usr/bin/env bash
# How shared-harness.sh starts ferry-agent under the shared harness:
#   shared-harness-agent.sh BIN CONFIG DATA_DIR LISTEN WORKDIR [QUEUE_CONFIG]
# runs BIN on the harness's generated Prometheus YAML, with QUEUE_CONFIG (flow-style YAML)
# added to its one remote_write entry when given, and $FERRY_EXTERNAL_LABELS (flow-style YAML
# without the braces) as global.external_labels when set. exec, so the harness measures the
# agent.
set -euo pipefail
bin=$1 cfg=$2 data=$3 listen=$4 workdir=$5 queue_config=${6:-}
if [[ -n "${FERRY_EXTERNAL_LABELS:-}" ]]; then
  sed "s/^global:\$/global:\n  external_labels: {$FERRY_EXTERNAL_LABELS}/" "$cfg" >"$workdir/ferry-external.yml"
  cfg="$workdir/ferry-external.yml"
fi
if [[ -n "$queue_config" ]]; then
  # The generated remote_write entry is the file's last block, its keys indented by four.
  cp "$cfg" "$workdir/ferry.yml"
  echo "    queue_config: $queue_config" >>"$workdir/ferry.yml"
  cfg="$workdir/ferry.yml"
fi
exec "$bin" --config.file="$cfg" --storage.path="$data" --web.listen-address="$listen"
