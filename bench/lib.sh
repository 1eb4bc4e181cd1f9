# shellcheck shell=bash
# bench/lib.sh - shell functions the benchmarks share (sourced).

# Per-thread CPU seconds of pid $1 as "main ingest writer workers wait", by
# thread: the event loop is the thread whose id is the pid, the ingest
# worker's threads are named htd-ingest*, the store's writer htd-writer,
# the rest are the summaries' thread and libuv's pool (queries); wait is
# the time all of them spent runnable but waiting for a CPU (schedstat):
# other processes on the machine, or each other when pinned.
thread_cpu() {
  # One awk over every thread's files: a snapshot taken while a benchmark
  # runs must cost the machine next to nothing (a process per thread and
  # file cost ~0.1 s on two cores).
  local tk
  tk=$(getconf CLK_TCK)
  awk -v pid="$1" -v k="$tk" '
    FNR == 1 { n = split(FILENAME, part, "/"); tid = part[n - 1]; kind = part[n] }
    kind == "comm" { comm[tid] = $0 }
    kind == "stat" {
      # utime and stime: fields 14 and 15, the 12th and 13th after the ") "
      # that ends the name (which may hold spaces).
      rest = substr($0, index($0, ") ") + 2)
      split(rest, f, " ")
      ticks[tid] = f[12] + f[13]
    }
    kind == "schedstat" { wait += $2 }
    END {
      for (t in ticks) {
        if (t == pid) main += ticks[t]
        else if (comm[t] ~ /^htd-ingest/) ingest += ticks[t]
        else if (comm[t] == "htd-writer") writer += ticks[t]
        else workers += ticks[t]
      }
      printf "%.2f %.2f %.2f %.2f %.2f", main / k, ingest / k, writer / k, workers / k, wait / 1e9
    }' /proc/"$1"/task/*/comm /proc/"$1"/task/*/stat /proc/"$1"/task/*/schedstat 2>/dev/null
}

# Waits until file $1 has $5 lines (default 1) matching the extended regex
# $2, for at most $4 seconds (default 10), while pid $3 lives. Returns 1
# when the time is up or the process is gone.
wait_for_line() {
  local i c n=$((${4:-10} * 100))
  for ((i = 0; i < n; i++)); do
    c=$(grep -cE -- "$2" "$1" 2>/dev/null) || true
    [ "${c:-0}" -ge "${5:-1}" ] && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.01
  done
  return 1
}

# field NAME LINE: the value of NAME=value in a "key=value ..." line.
field() {
  local kv
  for kv in $2; do
    [ "${kv%%=*}" = "$1" ] && { echo "${kv#*=}"; return 0; }
  done
  return 1
}
