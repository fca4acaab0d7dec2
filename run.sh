#!/usr/bin/env bash
# run.sh: the one entry point of this project.
#
#   ./run.sh [QUESTION] [options]       the demo: offline replay of cassettes/weather.json unless OPENAI_API_KEY or
#                                       --base-url is given (./run.sh --help lists the options)
#   ./run.sh serve CASSETTE [--port N] [--host ADDRESS]
#                                       the replay server alone; prints its base URL on stdout
#   ./run.sh test [dotnet test args]    the whole test suite; its last line is "N passed, N failed"
#   ./run.sh publish                    a Native AOT build: artifacts/publish/ToolCall, which needs no .NET to run
#   ./run.sh bench [--quick] [--help]   this client against the OpenAI SDK, Microsoft.Extensions.AI and a raw
#                                       HttpClient floor, and the demo's cold start (docs/performance.md)
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

# The demo is rebuilt only when one of its sources (ToolCall.csproj and every .cs file of the program, i.e. outside
# ToolCall.Tests/, bench/, conformance/ and the build folders) is newer than its build: even a build with nothing to do
# takes two seconds.
app_dll="$root/bin/Release/net10.0/ToolCall.dll"
build_app_if_changed() {
  if [ -f "$app_dll" ] && [ -z "$(find "$root" \( -path "$root/ToolCall.Tests" -o -path "$root/bench" -o -path "$root/conformance" \
    -o -path "$root/bin" -o -path "$root/obj" -o -path "$root/artifacts" -o -path "$root/.git" \) -prune -o \
    \( -name '*.cs' -o -name ToolCall.csproj \) -newer "$app_dll" -print -quit)" ]; then
    return 0
  fi
  build_app
}

# The AOT build keeps its own obj/ and bin/ under artifacts/aot, so that its restore (a runtime identifier, the
# ILCompiler package) never rewrites the everyday build's. -warnaserror: a trim or AOT warning fails the build.
# The cassettes go beside the binary, so the folder runs the offline demo wherever it is copied.
publish_aot() {
  quiet dotnet publish "$root/ToolCall.csproj" -c Release --use-current-runtime -p:PublishAot=true -warnaserror \
    -p:BaseIntermediateOutputPath="$root/artifacts/aot/obj/" -p:BaseOutputPath="$root/artifacts/aot/bin/" \
    -o "$root/artifacts/publish" -nologo -v quiet -clp:NoSummary
  mkdir -p "$root/artifacts/publish/cassettes"
  cp -R "$root/cassettes/." "$root/artifacts/publish/cassettes/"
}

# Everything is built before anything runs, one build at a time (two builds of ToolCall.csproj at once would write
# the same files): the bench, which builds ToolCall and the SDK demo with it, then the AOT binary for the cold start.
run_bench() {
  local arg need_aot=1
  for arg in "$@"; do
    case "$arg" in --no-cold-start | --no-network | --trace | --allocations | -h | --help) need_aot=0 ;; esac
  done
  if ! quiet dotnet build "$root/bench/ToolCall.Bench.csproj" -c Release -nologo -v quiet -clp:NoSummary; then
    echo "The bench build failed (its output is above)." >&2
    return 1
  fi
  if [ "$need_aot" -eq 1 ] && ! publish_aot; then
    echo "The Native AOT build failed (its output is above); ./run.sh bench --no-cold-start runs without it." >&2
    return 1
  fi
  dotnet "$root/bench/bin/Release/net10.0/ToolCall.Bench.dll" "$@"
}

run_tests() {
  local results="$root/TestResults" status=0
  rm -rf "$results"
  if ! quiet dotnet build "$root/ToolCall.Tests/ToolCall.Tests.csproj" -c Release -nologo -v quiet -clp:NoSummary; then
    echo "The test build failed (its output is above)."
    echo "0 passed, 1 failed"
    return 1
  fi
  dotnet test "$root/ToolCall.Tests/ToolCall.Tests.csproj" -c Release --no-build -nologo \
    --logger "console;verbosity=minimal" --logger "trx;LogFileName=tests.trx" --results-directory "$results" "$@" || status=$?
  # The summary line CI reads, from the TRX counters: <Counters total=".." passed=".." failed=".." ...>
  local passed failed
  read -r passed failed < <(cat "$results"/*.trx 2>/dev/null | awk '
    /<Counters / { match($0, / passed="[0-9]+"/); p += substr($0, RSTART + 9, RLENGTH - 10)
                   match($0, / failed="[0-9]+"/); f += substr($0, RSTART + 9, RLENGTH - 10) }
    END { print p + 0, f + 0 }')
  if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi # the run itself failed (crash, abort)
  echo "$passed passed, $failed failed"
  return "$status"
}

case "${1:-}" in
  test)
    shift
    run_tests "$@"
    ;;
  publish)
    publish_aot
    echo "artifacts/publish/ToolCall: the demo as a native program (Native AOT); run it, or copy the folder anywhere."
    ;;
  bench)
    shift
    run_bench "$@"
    ;;
  *)
    build_app_if_changed
    exec dotnet "$app_dll" "$@"
    ;;
esac
