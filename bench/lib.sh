# shellcheck shell=bash
# bench/lib.sh - shell functions the benchmarks share (sourced).

# Per-thread CPU seconds of pid $1 as "main ingest writer workers wait", by
# thread: the event loop is the thread whose id is the pid, the ingest
# worker's threads are named htd-ingest*, the store's writer htd-writer, the
# rest are libuv pool workers (summaries); wait is the time all of them
# spent runnable but waiting for a CPU (schedstat): other processes on the
# machine, or each other when pinned.
thread_cpu() {
  local tk t tid comm main=0 ingest=0 writer=0 workers=0 wait=0
  tk=$(getconf CLK_TCK)
  for t in /proc/"$1"/task/*; do
    tid=${t##*/}
    comm=$(cat "$t/comm" 2>/dev/null) || continue
    # Fields 14 and 15 (utime, stime) after the ") " that ends the name.
    local ticks ns
    ticks=$(sed 's/.*) //' "$t/stat" 2>/dev/null | awk '{ print $12 + $13 }') || continue
    ns=$(awk '{ print $2 }' "$t/schedstat" 2>/dev/null || echo 0)
    wait=$((wait + ${ns:-0}))
    if [ "$tid" = "$1" ]; then main=$((main + ticks))
    elif [[ $comm == htd-ingest* ]]; then ingest=$((ingest + ticks))
    elif [ "$comm" = htd-writer ]; then writer=$((writer + ticks))
    else workers=$((workers + ticks)); fi
  done
  awk -v a="$main" -v i="$ingest" -v b="$writer" -v c="$workers" -v k="$tk" -v w="$wait" \
    'BEGIN { printf "%.2f %.2f %.2f %.2f %.2f", a / k, i / k, b / k, c / k, w / 1e9 }'
}
