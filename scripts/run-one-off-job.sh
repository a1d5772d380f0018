#!/usr/bin/env bash
# Run a command as a Render one-off job on a service's latest build and wait for it to finish.
# Usage and exit codes: run with --help. Needs bash, curl and python3 (no jq).
set -euo pipefail

readonly EXIT_OK=0 EXIT_JOB_FAILED=1 EXIT_USAGE=2 EXIT_API=3 EXIT_TIMEOUT=124

usage() {
    cat <<'EOF'
Usage: scripts/run-one-off-job.sh SERVICE_ID COMMAND [ARGS...]

Starts COMMAND as a Render one-off job on SERVICE_ID (srv-...), using the service's latest
successful build and all of its environment variables, then polls until the job ends.
The COMMAND words are joined with single spaces into the job's startCommand, exactly as given;
to control the quoting yourself, pass the whole command as one argument.

  One-off jobs run on separate compute WITHOUT the service's persistent disk. Only disk-free
  commands make sense there:
      relayer-job preflight
      relayer-job snapshots list
      relayer-job snapshots verify
      relayer-job snapshots prune
  Commands that need the database on the disk (deploy, gate, migrate, restore, schema, snapshot, status)
  must run inside the running instance instead:  render ssh SERVICE_ID,  then  relayer-job status
  This script refuses them (override with RENDER_ALLOW_DISK_COMMAND=1).

Environment:
  RENDER_API_KEY         required; a Render API key (never printed)
  RENDER_API_URL         default https://api.render.com/v1
  RENDER_POLL_INTERVAL   seconds between status polls, default 5
  RENDER_JOB_TIMEOUT     seconds to wait for the job to end, default 1800
  RENDER_JOB_PLAN_ID     optional planId for the job's instance type

Exit codes:
  0    the job succeeded
  1    the job failed or was canceled (see its logs in the Render Dashboard: service > Jobs)
  2    usage or configuration error (missing RENDER_API_KEY, bad arguments); nothing was started
  3    Render API error (HTTP error such as 401/404, unreadable response, network failure)
  124  timed out waiting; the job may still be running (its id is printed)
EOF
}

log() { printf '%s\n' "$*" >&2; }
die() {
    local code=$1
    shift
    log "run-one-off-job: $*"
    exit "$code"
}

# --- arguments and configuration -------------------------------------------------------------
if [[ $# -ge 1 && ($1 == "-h" || $1 == "--help") ]]; then
    usage
    exit "$EXIT_OK"
fi
if [[ $# -lt 2 ]]; then
    usage >&2
    die "$EXIT_USAGE" "give a SERVICE_ID and a COMMAND"
fi
service_id=$1
shift
[[ $service_id =~ ^[A-Za-z0-9_-]+$ ]] || die "$EXIT_USAGE" "SERVICE_ID must look like srv-xxxx, got: $service_id"
[[ -n ${1:-} ]] || die "$EXIT_USAGE" "COMMAND is empty"

# ${VAR:+set} keeps the key itself out of `set -x` traces.
[[ -n ${RENDER_API_KEY:+set} ]] ||
    die "$EXIT_USAGE" "RENDER_API_KEY is not set; create a key under Account Settings > API Keys and export it"

api_url=${RENDER_API_URL:-https://api.render.com/v1}
api_url=${api_url%/}
interval=${RENDER_POLL_INTERVAL:-5}
timeout=${RENDER_JOB_TIMEOUT:-1800}
[[ $interval =~ ^[0-9]+([.][0-9]+)?$ ]] || die "$EXIT_USAGE" "RENDER_POLL_INTERVAL must be a number of seconds"
[[ $timeout =~ ^[0-9]+$ && $timeout -gt 0 ]] || die "$EXIT_USAGE" "RENDER_JOB_TIMEOUT must be a whole number of seconds > 0"
command -v curl >/dev/null || die "$EXIT_USAGE" "curl is required"
command -v python3 >/dev/null || die "$EXIT_USAGE" "python3 is required"

# Refuse commands that need the disk: in a one-off job they would see an empty /data.
words=("$@")
if [[ ${#words[@]} -eq 1 ]]; then
    read -r -a words <<<"$1"
fi
if [[ ${words[0]:-} == relayer-job || ${words[0]:-} == */relayer-job ]] && [[ ${RENDER_ALLOW_DISK_COMMAND:-} != 1 ]]; then
    case ${words[1]:-} in
    deploy | gate | migrate | restore | schema | snapshot | status)
        die "$EXIT_USAGE" "'relayer-job ${words[1]}' needs the persistent disk, which one-off jobs do not have." \
            "Run it inside the running instance: render ssh $service_id (see docs/operations.md)."
        ;;
    esac
fi

payload=$(python3 -c '
import json, os, sys
body = {"startCommand": " ".join(sys.argv[1:])}
plan = os.environ.get("RENDER_JOB_PLAN_ID")
if plan:
    body["planId"] = plan
print(json.dumps(body))
' "$@")

# --- HTTP ------------------------------------------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# api METHOD PATH [BODY]: prints the HTTP status (000 when there was no response); the response
# body is in $tmp/body. The Authorization header reaches curl through a here-document on stdin
# (--config -), so the key appears neither in the process list nor in a `set -x` trace.
api() {
    local method=$1 path=$2 body=${3:-} code
    local args=(--silent --show-error --max-time 30 --request "$method"
        --header "Accept: application/json" --output "$tmp/body" --write-out '%{http_code}')
    if [[ -n $body ]]; then
        args+=(--header "Content-Type: application/json" --data-binary "$body")
    fi
    : >"$tmp/body"
    code=$(
        curl --config - "${args[@]}" "$api_url$path" 2>"$tmp/curl.err" <<EOF
header = "Authorization: Bearer ${RENDER_API_KEY}"
EOF
    ) || code=000
    printf '%s' "$code"
}

# json_field FILE KEY: prints body[KEY] ("" if absent or null); exit 1 if FILE is not a JSON object.
json_field() {
    python3 -c '
import json, sys
try:
    data = json.load(open(sys.argv[1], encoding="utf-8"))
except (OSError, ValueError):
    sys.exit(1)
if not isinstance(data, dict):
    sys.exit(1)
value = data.get(sys.argv[2])
print("" if value is None else value)
' "$1" "$2"
}

# Explain a failed API call and exit 3.
api_error() {
    local what=$1 code=$2 hint=""
    case $code in
    000) die "$EXIT_API" "$what: could not reach $api_url: $(tr '\n' ' ' <"$tmp/curl.err")" ;;
    401) hint=" (RENDER_API_KEY was rejected: wrong, expired or revoked key)" ;;
    403) hint=" (the API key's workspace has no access to this service)" ;;
    404) hint=" (no such service or job: check SERVICE_ID $service_id)" ;;
    429) hint=" (rate limited: retry later)" ;;
    esac
    local detail
    detail=$(head -c 500 "$tmp/body" 2>/dev/null | tr '\n' ' ' || true)
    die "$EXIT_API" "$what: HTTP $code from Render API$hint${detail:+: $detail}"
}

# --- create the job --------------------------------------------------------------------------
log "run-one-off-job: starting on $service_id: $*"
code=$(api POST "/services/$service_id/jobs" "$payload")
[[ $code == 2?? ]] || api_error "creating the job" "$code"
job_id=$(json_field "$tmp/body" id) || die "$EXIT_API" "creating the job: the response is not JSON"
[[ -n $job_id ]] || die "$EXIT_API" "creating the job: the response has no job id"
status=$(json_field "$tmp/body" status || true)
log "run-one-off-job: job $job_id created (status ${status:-pending})"

# --- wait for it -----------------------------------------------------------------------------
# Polls tolerate transient trouble (network, 5xx, 429) until the timeout; other HTTP errors stop.
SECONDS=0
last=${status:-}
while :; do
    case $last in
    succeeded | failed | canceled) break ;;
    esac
    if ((SECONDS >= timeout)); then
        log "run-one-off-job: timed out after ${timeout}s; job $job_id is still '${last:-unknown}'." \
            "It may still finish: check the Render Dashboard (service > Jobs)."
        exit "$EXIT_TIMEOUT"
    fi
    sleep "$interval"
    code=$(api GET "/services/$service_id/jobs/$job_id")
    case $code in
    2??)
        status=$(json_field "$tmp/body" status) || {
            log "run-one-off-job: unreadable status response; retrying"
            continue
        }
        if [[ $status != "$last" ]]; then
            log "run-one-off-job: [${SECONDS}s] job $job_id: ${status:-pending}"
            last=$status
        fi
        ;;
    000 | 429 | 5??)
        log "run-one-off-job: [${SECONDS}s] polling failed (HTTP $code); retrying"
        ;;
    *) api_error "polling job $job_id" "$code" ;;
    esac
done

echo "job $job_id $last"
if [[ $last == succeeded ]]; then
    exit "$EXIT_OK"
fi
log "run-one-off-job: job $job_id $last; its logs are in the Render Dashboard (service > Jobs)." \
    "Render reports no exit code for one-off jobs; the job's last log line (job.finished) has it."
exit "$EXIT_JOB_FAILED"
