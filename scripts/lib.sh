# Helpers of scripts/test: timed steps, and builds that run in the
# background while the rest goes on.

# Tools are built without symbol tables and DWARF: they are run, never
# debugged here, and a large binary links much faster without them.
tool_ldflags="-s -w"

# Command-line tools the tests run for a moment each (cosign, helm, crictl,
# the conformance suite) are compiled without optimization or inlining:
# about a quarter less CPU to build, minutes on a fresh 2-core machine, for
# no difference a test can see. Servers the tests lean on stay optimized.
cli_gcflags="all=-N -l"

started_at=$(date +%s)

# step prints a heading with the time since the start, so that a slow
# run shows where its time went.
step() {
  local t=$(($(date +%s) - started_at))
  cpu_so_far
  printf '== [%d:%02d, CPU %s] %s\n' $((t / 60)) $((t % 60)) "$cpu" "$*"
}

# cpu_so_far sets cpu to the CPU time (user + system, m:ss) of this script and
# the processes it has waited for; a build still running in the
# background is counted once it is waited for. On 2 cores, CPU time near
# twice the wall time says the run is bound by the CPU.
cpu_so_far() {
  local f
  f=$(mktemp)
  times >"$f" # here, not in $(...): a subshell's children are not these
  cpu=$(awk '{ for (i = 1; i <= NF; i++) { split($i, p, "m"); s += p[1] * 60 + p[2] } }
    END { printf "%d:%02d", s / 60, s % 60 }' "$f")
  rm -f "$f"
}

declare -A build_pid build_log build_label build_time

# start_build NAME LABEL CMD...: runs CMD in the background, its output
# in a log shown only if it fails, its wall and CPU time shown when it is
# waited for: on 2 cores the run's length is its CPU time, so a run
# that grew shows which build grew.
start_build() {
  local name=$1 label=$2
  shift 2
  build_log[$name]=$(mktemp)
  build_time[$name]=$(mktemp)
  build_label[$name]=$label
  step "building $label in the background"
  (
    TIMEFORMAT='%0R s wall, %0U s user + %0S s system CPU'
    time "$@" >"${build_log[$name]}" 2>&1
  ) 2>"${build_time[$name]}" &
  build_pid[$name]=$!
}

# wait_build NAME: waits for a build started by start_build (none: no-op)
# and fails the run with its log if it failed.
wait_build() {
  local name=$1
  [ -n "${build_pid[$name]:-}" ] || return 0
  step "waiting for ${build_label[$name]}"
  if ! wait "${build_pid[$name]}"; then
    cat "${build_log[$name]}" "${build_time[$name]}" >&2
    echo "building ${build_label[$name]} failed" >&2
    exit 1
  fi
  step "built ${build_label[$name]}: $(cat "${build_time[$name]}")"
  rm -f "${build_log[$name]}" "${build_time[$name]}"
  unset "build_pid[$name]"
}

# builds_running [NAME...]: whether any of the named builds (none named:
# any build) is still running.
builds_running() {
  local names=("$@") name pid
  [ $# -gt 0 ] || names=("${!build_pid[@]}")
  for name in "${names[@]}"; do
    pid=${build_pid[$name]:-}
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && return 0
  done
  return 1
}

# fuzz TARGET PACKAGE TIME WORKERS runs one fuzz target. Go 1.26's fuzz
# coordinator can fail a run with a bare "context deadline exceeded" as
# -fuzztime ends, having found nothing (go.dev/issue/75804, fixed in
# 1.27). A real finding writes a failing input; only a failure without
# one is run once more.
fuzz() {
  local log
  log=$(mktemp)
  if ! go test -run '^$' -fuzz "^$1\$" -fuzztime "$3" -parallel "$4" "$2" 2>&1 | tee "$log"; then
    if grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
      echo "== fuzz $1: the Go 1.26 -fuzztime deadline race, not a finding; once more"
      go test -run '^$' -fuzz "^$1\$" -fuzztime "$3" -parallel "$4" "$2"
    else
      rm -f "$log"
      exit 1
    fi
  fi
  rm -f "$log"
}

