#!/usr/bin/env bash
# run.sh: the one entry point of this project.
#
#   ./run.sh [QUESTION] [options]       the demo: offline replay of cassettes/weather.json unless OPENAI_API_KEY or
#                                       --base-url is given (./run.sh --help lists the options)
#   ./run.sh serve CASSETTE [--port N] [--host ADDRESS]
#                                       the replay server alone; prints its base URL on stdout
#   ./run.sh test [dotnet test args]    the whole test suite; its last line is "N passed, N failed"
#
# Builds are quiet: their output is shown only when they fail.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

# quiet COMMAND...: run a build step, print its output only if it fails.
quiet() {
  local log status=0
  log="$(mktemp)"
  "$@" >"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then cat "$log" >&2; fi
  rm -f "$log"
  return "$status"
}

build_app() {
  quiet dotnet build "$root/ToolCall.csproj" -c Release -nologo -v quiet -clp:NoSummary
}

run_tests() {
  local results status=0
  results="$(mktemp -d)"
  if ! quiet dotnet build "$root/ToolCall.Tests/ToolCall.Tests.csproj" -c Release -nologo -v quiet -clp:NoSummary; then
    echo "The test build failed (its output is above)."
    echo "0 passed, 1 failed"
    return 1
  fi
  dotnet test "$root/ToolCall.Tests/ToolCall.Tests.csproj" -c Release --no-build -nologo \
    --logger "console;verbosity=normal" --logger "trx;LogFileName=tests.trx" --results-directory "$results" "$@" || status=$?
  # The summary line CI reads, from the TRX counters: <Counters total=".." passed=".." failed=".." ...>
  local passed failed
  read -r passed failed < <(cat "$results"/*.trx 2>/dev/null | awk '
    /<Counters / { match($0, / passed="[0-9]+"/); p += substr($0, RSTART + 9, RLENGTH - 10)
                   match($0, / failed="[0-9]+"/); f += substr($0, RSTART + 9, RLENGTH - 10) }
    END { print p + 0, f + 0 }')
  rm -rf "$results"
  if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi # the run itself failed (crash, abort)
  echo "$passed passed, $failed failed"
  return "$status"
}

case "${1:-}" in
  test)
    shift
    run_tests "$@"
    ;;
  *)
    build_app
    exec dotnet "$root/bin/Release/net10.0/ToolCall.dll" "$@"
    ;;
esac
