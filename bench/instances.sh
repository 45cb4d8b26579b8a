#!/usr/bin/env bash
# bench/instances.sh: two lockbridge instances on PostgreSQL against one on SQLite, both
# against the directory's own speed measured in the same run; then, with SOAK_SECS, a
# soak of both instances under SCIM and admin load, watching their memory.
#
#   bench/instances.sh                         10,000 users, split then shared CPU layout
#   USERS=100000 LAYOUTS=shared bench/instances.sh
#   SOAK_SECS=600 LAYOUTS=shared bench/instances.sh   the comparison, then a 10-minute soak
#   SOAK_ONLY=1 SOAK_SECS=600 bench/instances.sh      the soak alone
#
# One directory (scripts/lib/slapd-sandbox, USERS generated users), one PostgreSQL server
# (scripts/lib/postgres-sandbox) and three daemons (release build), all started once:
#   sqlite    one instance on its own SQLite store (the one-box install)
#   pg-a/b    two instances on one PostgreSQL database (several hosts behind a load
#             balancer; here the load generator spreads its clients over both)
# Each round measures, after WARMUP seconds of the same load (order reversed every other
# round, so drift hits every side alike):
#   raw search        bench/scimload ldap-search, GET_CLIENTS LDAPS connections
#   GET sqlite        GET /scim/v2/Users?filter=userName eq "userNNNNNN" on the SQLite instance
#   GET 2 x pg        the same, client i on instance i mod 2
#   raw passmod       RFC 3062 Password Modify with the ppolicy control, PATCH_CLIENTS
#   PATCH sqlite      PATCH /scim/v2/Users/{id} replacing password
#   PATCH 2 x pg      the same over both PostgreSQL instances
# and prints each SCIM figure as a ratio to the raw one of the same round (medians of the
# rounds), and the two-instance ratio against the one-instance ratio (issue "Several
# instances on PostgreSQL": no worse than one instance on SQLite).
#
# CPU layouts (as bench/scim.sh): split = slapd alone on the first half of the CPUs, the
# daemons, PostgreSQL and the load generator on the other half; shared = every process on
# every CPU (a one-box install).
#
# Soak (SOAK_SECS > 0, shared layout only: it runs after the last layout): both PostgreSQL
# instances for SOAK_SECS under SOAK_GET_CLIENTS SCIM GET, SOAK_PATCH_CLIENTS SCIM password
# PATCH, SOAK_ADMIN_CLIENTS admin GET and SOAK_RESET_CLIENTS admin password-reset clients at
# once, errors counted, not fatal; each instance's resident memory sampled every
# SOAK_SAMPLE_SECS. Prints p50/p99/errors per load and the memory of the first and the last
# minute: "flat" when the last minute's mean is within 10 % (+ 4 MiB) of the first's (of the
# second's when the soak lasts 3 minutes or more: the first is warm-up), with the trend after
# warm-up (least squares, MiB per minute).
#
# Environment: USERS LAYOUTS ROUNDS DURATION WARMUP WRITE_WARMUP GET_CLIENTS PATCH_CLIENTS
# POOL_SIZE SOAK_SECS SOAK_ONLY SOAK_* LOCKBRIDGE_BIN=path (skips the release build),
# KEEP=1 (keeps the work folder with the logs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
USERS=${USERS:-10000}
LAYOUTS=${LAYOUTS:-split shared}
ROUNDS=${ROUNDS:-4}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
WRITE_WARMUP=${WRITE_WARMUP:-20}
GET_CLIENTS=${GET_CLIENTS:-32}
PATCH_CLIENTS=${PATCH_CLIENTS:-8}
POOL_SIZE=${POOL_SIZE:-32}
SOAK_SECS=${SOAK_SECS:-0}
SOAK_ONLY=${SOAK_ONLY:-0}
SOAK_GET_CLIENTS=${SOAK_GET_CLIENTS:-16}
SOAK_PATCH_CLIENTS=${SOAK_PATCH_CLIENTS:-4}
SOAK_ADMIN_CLIENTS=${SOAK_ADMIN_CLIENTS:-4}
SOAK_RESET_CLIENTS=${SOAK_RESET_CLIENTS:-2}
SOAK_SAMPLE_SECS=${SOAK_SAMPLE_SECS:-10}
KEEP=${KEEP:-0}
export SLAPD_SANDBOX_DEBUG=${SLAPD_SANDBOX_DEBUG:-0}
PY=/usr/bin/python3
READY_TIMEOUT_SECS=60
# What a SCIM read asks the directory for (as bench/scim.sh; the demo's mapping with
# lockbridge's schema loaded).
ATTRS=${ATTRS:-objectClass,uid,givenName,sn,cn,lockbridgeMiddleName,lockbridgeHonorificPrefix,lockbridgeHonorificSuffix,displayName,lockbridgeNickName,lockbridgeProfileUrl,title,lockbridgeUserType,preferredLanguage,lockbridgeLocale,lockbridgeTimezone,mail,telephoneNumber,mobile,facsimileTelephoneNumber,homePhone,pager,postalAddress,street,l,st,postalCode,lockbridgeCountry,employeeNumber,lockbridgeCostCenter,departmentNumber,o,lockbridgeDivision,manager,lockbridgeEmail,lockbridgePhoneNumber,lockbridgeIm,lockbridgePhoto,lockbridgeEntitlement,lockbridgeRole,lockbridgeX509Certificate,lockbridgePrimary,lockbridgeAddress,lockbridgeExternalId,memberOf,entryUUID,entryCSN,createTimestamp,modifyTimestamp,pwdReset,pwdChangedTime,pwdAccountLockedTime,pwdPolicySubentry}

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
	printf 'bench: error: %s\n' "$*" >&2
	exit 1
}

for v in USERS ROUNDS DURATION GET_CLIENTS PATCH_CLIENTS POOL_SIZE SOAK_SAMPLE_SECS; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
# A soak load with 0 clients is left out (to find which load a memory growth follows).
for v in SOAK_GET_CLIENTS SOAK_PATCH_CLIENTS SOAK_ADMIN_CLIENTS SOAK_RESET_CLIENTS; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
for v in WARMUP WRITE_WARMUP SOAK_SECS; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number of seconds (got '${!v}')"
done
((USERS >= GET_CLIENTS && USERS >= PATCH_CLIENTS)) || die "USERS must be at least the number of clients"
((!SOAK_ONLY || SOAK_SECS > 0)) || die "SOAK_ONLY=1 needs SOAK_SECS > 0"
for layout in $LAYOUTS; do
	[[ $layout == split || $layout == shared ]] || die "LAYOUTS holds split and/or shared (got '$layout')"
done
command -v curl >/dev/null 2>&1 || die "curl not found (scripts/lib/ensure-packages installs it)"
command -v taskset >/dev/null 2>&1 || die "taskset not found (util-linux)"

# ---- builds -------------------------------------------------------------------------------
LOAD_TARGET=$ROOT/bench/scimload/target
log "building the load generator (bench/scimload, release)"
cargo build --release --quiet --manifest-path "$ROOT/bench/scimload/Cargo.toml" \
	--target-dir "$LOAD_TARGET" || die "building bench/scimload failed"
LOAD=$LOAD_TARGET/release/scimload
if [[ -n ${LOCKBRIDGE_BIN:-} ]]; then
	BIN=$LOCKBRIDGE_BIN
else
	log "building lockbridge (cargo build --release)"
	(cd "$ROOT" && cargo build --release --quiet --bin lockbridge) || die "cargo build --release failed"
	BIN=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
		"$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/lockbridge
fi
[[ -x $BIN ]] || die "$BIN is not an executable lockbridge binary"
"$ROOT/scripts/lib/ensure-packages" --store postgres >/dev/null || die "installing PostgreSQL failed"

# ---- directory, database ------------------------------------------------------------------
WORK=$(mktemp -d -t lockbridge-instances-bench-XXXXXX)
# PostgreSQL's own system user (under root) must get through to its folder.
chmod 711 "$WORK"
PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	"$ROOT/scripts/lib/slapd-sandbox" stop "$WORK/ldap" >/dev/null 2>&1 || true
	"$ROOT/scripts/lib/postgres-sandbox" stop "$WORK/pg" >/dev/null 2>&1 || true
	if ((KEEP)); then
		log "kept $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting a directory of $USERS users"
"$ROOT/scripts/lib/slapd-sandbox" start "$WORK/ldap" --users "$USERS" --watch-pid $$ >/dev/null ||
	die "the sandbox directory did not start (scripts/lib/ensure-packages installs slapd)"
# shellcheck disable=SC1091
source "$WORK/ldap/sandbox.env"
SLAPD_PID=$(<"$SLAPD_PID_FILE")
log "starting PostgreSQL"
"$ROOT/scripts/lib/postgres-sandbox" start "$WORK/pg" --watch-pid $$ >/dev/null ||
	die "the sandbox PostgreSQL did not start"
# shellcheck disable=SC1091
source "$WORK/pg/sandbox.env"
POSTGRES_PID=$(head -n1 "$POSTGRES_PID_FILE")
(umask 077 && printf '%s' "$POSTGRES_PASSWORD" >"$WORK/pg-password")
sync

# ---- daemons ------------------------------------------------------------------------------
(umask 077 && head -c32 /dev/urandom | base64 >"$WORK/master-key")
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# write_config NAME PORT STORE_TOML: the daemon's configuration in $WORK/NAME.toml.
write_config() {
	local name=$1 port=$2 store=$3
	cat >"$WORK/$name.toml" <<TOML
# Written by bench/instances.sh; see config/lockbridge.example.toml for every key.
[server]
listen = "127.0.0.1:$port"
public_url = "http://127.0.0.1:$port"
state_dir = "$WORK/state-$name"
log_level = "warn"
rate_limit_per_second = 0
[security]
master_key_file = "$WORK/master-key"
[store]
$store
[directory]
url = "$LDAPS_URL"
ca_file = "$LDAP_CA_FILE"
bind_dn = "$LDAP_SERVICE_DN"
bind_password_file = "$LDAP_SERVICE_PASSWORD_FILE"
users_base = "$LDAP_USERS_BASE"
groups_base = "$LDAP_GROUPS_BASE"
admin_group_dns = ["$LDAP_ADMIN_GROUP_DN"]
pool_size = $POOL_SIZE
[mail]
# Nothing is mailed during the benchmark.
relay = "127.0.0.1"
port = 9
security = "none"
[expiry]
default_policy_dn = "cn=default,ou=policies,$LDAP_BASE_DN"
never_expires_policy_dn = "cn=never-expires,ou=policies,$LDAP_BASE_DN"
[sweep]
admin_recipients = ["admins@example.org"]
TOML
}

# start_daemon NAME PORT: serve $WORK/NAME.toml in the background (DAEMON_PID, DAEMON_URL).
declare -A DAEMON_PID DAEMON_URL
start_daemon() {
	local name=$1 port=$2 deadline pid
	"$BIN" serve --config "$WORK/$name.toml" </dev/null >"$WORK/$name.log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	DAEMON_PID[$name]=$pid
	DAEMON_URL[$name]=http://127.0.0.1:$port
	deadline=$(($(date +%s) + READY_TIMEOUT_SECS))
	until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${DAEMON_URL[$name]}/readyz" || true) == 200 ]]; do
		kill -0 "$pid" 2>/dev/null || {
			tail -n 20 "$WORK/$name.log" >&2
			die "lockbridge ($name) exited during start-up"
		}
		(($(date +%s) < deadline)) || die "lockbridge ($name) was not ready within ${READY_TIMEOUT_SECS}s"
		sleep 0.2
	done
}

PG_STORE="kind = \"postgres\"
url = \"postgres://$POSTGRES_USER@127.0.0.1:$POSTGRES_PORT/$POSTGRES_DATABASE\"
password_file = \"$WORK/pg-password\"
tls = \"off\"
max_connections = 16"
declare -A PORT
for name in sqlite pg-a pg-b; do PORT[$name]=$(free_port); done
write_config sqlite "${PORT[sqlite]}" "kind = \"sqlite\"
path = \"$WORK/lockbridge.db\""
write_config pg-a "${PORT[pg-a]}" "$PG_STORE"
write_config pg-b "${PORT[pg-b]}" "$PG_STORE"

# token NAME CONFIG ROLE FILE: a bearer token, in FILE.
token() {
	local t
	t=$("$BIN" token create --config "$WORK/$2.toml" --name "$1" --role "$3" 2>"$WORK/token.err") || {
		sed 's/^/  /' "$WORK/token.err" >&2
		die "lockbridge token create ($2) failed"
	}
	(umask 077 && printf '%s' "$t" >"$4")
}
log "creating tokens (those in the PostgreSQL store serve both instances on it)"
token bench-scim sqlite scim "$WORK/token-sqlite"
token bench-scim pg-a scim "$WORK/token-pg"
token bench-admin pg-a global-admin "$WORK/token-pg-admin"
for name in sqlite pg-a pg-b; do start_daemon "$name" "${PORT[$name]}"; done
log "daemons ready: sqlite ${DAEMON_URL[sqlite]}, pg-a ${DAEMON_URL[pg-a]}, pg-b ${DAEMON_URL[pg-b]}"

LDAP_ARGS=(--ldap-url "$LDAPS_URL" --ca-file "$LDAP_CA_FILE" --bind-dn "$LDAP_SERVICE_DN"
	--bind-password-file "$LDAP_SERVICE_PASSWORD_FILE" --users-base "$LDAP_USERS_BASE" --attrs "$ATTRS")
SQLITE_ARGS=(--scim-url "${DAEMON_URL[sqlite]}/scim/v2" --token-file "$WORK/token-sqlite")
PG_ARGS=(--scim-url "${DAEMON_URL[pg-a]}/scim/v2" --scim-url "${DAEMON_URL[pg-b]}/scim/v2"
	--token-file "$WORK/token-pg")

# pin CPUS PID...: every thread of each process (and its children) on CPUS; "" = every CPU.
pin() {
	local cpus=$1 pid child
	shift
	[[ -n $cpus ]] || cpus=$("$PY" -c 'import os; print(",".join(map(str, sorted(os.sched_getaffinity(0)))))')
	for pid in "$@"; do
		taskset -a -p -c "$cpus" "$pid" >/dev/null
		for child in $(pgrep -P "$pid" || true); do taskset -a -p -c "$cpus" "$child" >/dev/null || true; done
	done
}

RESULTS=$WORK/results.txt
: >"$RESULTS"
# measure LAYOUT ROUND LABEL MODE CLIENTS CPU_WATCH ARGS...
measure() {
	local layout=$1 round=$2 label=$3 mode=$4 clients=$5 watch=$6 line
	shift 6
	if ! line=$("${ON_CLIENT_CPUS[@]}" "$LOAD" --mode "$mode" --clients "$clients" --users "$USERS" \
		--duration "$DURATION" --warmup "$WARMUP" --cpu "slapd=$SLAPD_PID" --cpu "lockbridge=$watch" \
		--cpu "postgres=$POSTGRES_PID+" "$@" 2>"$WORK/load.err"); then
		[[ -z $line ]] || echo "$line" >&2
		sed 's/^/  /' "$WORK/load.err" >&2
		die "scimload --mode $mode ($label) failed in round $round (KEEP=1 keeps the logs)"
	fi
	log "$layout round $round $label: $line"
	echo "layout=$layout round=$round label=$label $line" >>"$RESULTS"
}

ALL_PIDS=("$SLAPD_PID" "$POSTGRES_PID" "${DAEMON_PID[sqlite]}" "${DAEMON_PID[pg-a]}" "${DAEMON_PID[pg-b]}")
PG_PIDS="${DAEMON_PID[pg-a]},${DAEMON_PID[pg-b]}"
if ((!SOAK_ONLY)); then
	for layout in $LAYOUTS; do
		ON_CLIENT_CPUS=()
		if [[ $layout == split ]]; then
			read -r DIRECTORY_CPUS CLIENT_CPUS < <("$PY" -c '
import os
cpus = sorted(os.sched_getaffinity(0))
half = len(cpus) // 2
print(",".join(map(str, cpus[:half])) or "-", ",".join(map(str, cpus[half:])))')
			[[ $DIRECTORY_CPUS != - ]] || die "the split layout needs two CPUs"
			pin "$DIRECTORY_CPUS" "$SLAPD_PID"
			pin "$CLIENT_CPUS" "$POSTGRES_PID" "${DAEMON_PID[sqlite]}" "${DAEMON_PID[pg-a]}" "${DAEMON_PID[pg-b]}"
			ON_CLIENT_CPUS=(taskset -c "$CLIENT_CPUS")
			log "CPU layout split: slapd on CPUs $DIRECTORY_CPUS; daemons, PostgreSQL and the load generator on $CLIENT_CPUS"
		else
			pin "" "${ALL_PIDS[@]}"
			log "CPU layout shared: every process on every CPU"
		fi
		if ((WRITE_WARMUP > 0)); then
			log "warming up writes: ${WRITE_WARMUP}s of raw Password Modify, not measured"
			"${ON_CLIENT_CPUS[@]}" "$LOAD" --mode ldap-passmod --clients "$PATCH_CLIENTS" --users "$USERS" \
				--duration "$WRITE_WARMUP" --warmup 0 "${LDAP_ARGS[@]}" >/dev/null 2>"$WORK/load.err" ||
				die "the write warm-up failed: $(cat "$WORK/load.err")"
		fi
		for ((r = 1; r <= ROUNDS; r++)); do
			gets=(raw sqlite pg)
			patches=(raw sqlite pg)
			((r % 2)) || { gets=(pg sqlite raw) && patches=(pg sqlite raw); }
			for side in "${gets[@]}"; do
				case $side in
				raw) measure "$layout" "$r" get-raw ldap-search "$GET_CLIENTS" "${DAEMON_PID[sqlite]}" "${LDAP_ARGS[@]}" ;;
				sqlite) measure "$layout" "$r" get-sqlite scim-get "$GET_CLIENTS" "${DAEMON_PID[sqlite]}" "${SQLITE_ARGS[@]}" ;;
				pg) measure "$layout" "$r" get-pg scim-get "$GET_CLIENTS" "$PG_PIDS" "${PG_ARGS[@]}" ;;
				esac
			done
			for side in "${patches[@]}"; do
				case $side in
				raw) measure "$layout" "$r" patch-raw ldap-passmod "$PATCH_CLIENTS" "${DAEMON_PID[sqlite]}" "${LDAP_ARGS[@]}" ;;
				sqlite) measure "$layout" "$r" patch-sqlite scim-patch-password "$PATCH_CLIENTS" "${DAEMON_PID[sqlite]}" "${SQLITE_ARGS[@]}" ;;
				pg) measure "$layout" "$r" patch-pg scim-patch-password "$PATCH_CLIENTS" "$PG_PIDS" "${PG_ARGS[@]}" ;;
				esac
			done
		done
	done
fi

# ---- soak ---------------------------------------------------------------------------------
SOAK=$WORK/soak.txt
RSS=$WORK/rss.txt
: >"$SOAK"
: >"$RSS"
if ((SOAK_SECS > 0)); then
	pin "" "${ALL_PIDS[@]}"
	log "soak: ${SOAK_SECS}s on both PostgreSQL instances (shared layout): $SOAK_GET_CLIENTS SCIM GET," \
		"$SOAK_PATCH_CLIENTS SCIM PATCH, $SOAK_ADMIN_CLIENTS admin GET, $SOAK_RESET_CLIENTS admin reset clients"
	ADMIN_ARGS=(--api-url "${DAEMON_URL[pg-a]}/api/v1" --api-url "${DAEMON_URL[pg-b]}/api/v1"
		--token-file "$WORK/token-pg-admin")
	soak_load() {
		local mode=$1 clients=$2 line
		shift 2
		((clients > 0)) || return 0
		# Exit 1 = some errors, counted in the line; the soak reports them.
		line=$("$LOAD" --mode "$mode" --clients "$clients" --users "$USERS" --duration "$SOAK_SECS" \
			--warmup 0 --keep-going "$@" 2>>"$WORK/soak.err") || true
		echo "$line" >>"$SOAK"
	}
	soak_load scim-get "$SOAK_GET_CLIENTS" "${PG_ARGS[@]}" &
	l1=$!
	soak_load scim-patch-password "$SOAK_PATCH_CLIENTS" "${PG_ARGS[@]}" &
	l2=$!
	soak_load admin-get "$SOAK_ADMIN_CLIENTS" "${ADMIN_ARGS[@]}" &
	l3=$!
	# Admin resets and SCIM PATCHes may write the same user now and then: harmless, each
	# write is whole.
	soak_load admin-reset "$SOAK_RESET_CLIENTS" "${ADMIN_ARGS[@]}" &
	l4=$!
	start=$(date +%s)
	while kill -0 "$l1" 2>/dev/null || kill -0 "$l2" 2>/dev/null || kill -0 "$l3" 2>/dev/null || kill -0 "$l4" 2>/dev/null; do
		t=$(($(date +%s) - start))
		for name in pg-a pg-b; do
			kb=$(awk '/^VmRSS:/ {print $2}' "/proc/${DAEMON_PID[$name]}/status" 2>/dev/null || echo 0)
			echo "t=$t daemon=$name rss_kb=$kb" >>"$RSS"
		done
		sleep "$SOAK_SAMPLE_SECS"
	done
	wait "$l1" "$l2" "$l3" "$l4" || true
	[[ -s $WORK/soak.err ]] && grep -v '^$' "$WORK/soak.err" | sort | uniq -c | sort -rn | head -n 5 | sed 's/^/  soak: /' >&2
fi

# ---- report -------------------------------------------------------------------------------
"$PY" - "$RESULTS" "$SOAK" "$RSS" "$USERS" "$ROUNDS" "$DURATION" "$WARMUP" "$GET_CLIENTS" \
	"$PATCH_CLIENTS" "$(nproc)" "$SOAK_SECS" <<'PYEOF'
import statistics, sys
from collections import defaultdict

(results, soak, rss, users, rounds, duration, warmup, get_clients, patch_clients, cores,
 soak_secs) = sys.argv[1:]
parse = lambda line: dict(kv.split("=", 1) for kv in line.split())
runs = defaultdict(lambda: defaultdict(dict))  # layout -> label -> round -> fields
for line in open(results):
    if line.strip():
        f = parse(line)
        runs[f["layout"]][f["label"]][int(f["round"])] = f

def med(layout, label, key):
    vals = [float(f[key]) for f in runs[layout][label].values() if f.get(key, "NA") != "NA"]
    return statistics.median(vals) if vals else None

def ratios(layout, raw, scim):
    r = runs[layout]
    return [float(r[scim][k]["ops_per_sec"]) / float(r[raw][k]["ops_per_sec"]) for k in r[raw] if k in r[scim]]

fmt = lambda v, spec: format(v, spec) if v is not None else "-"
if runs:
    print()
    print(f"Instances benchmark: {int(users) + 5:,} users (slapd, mdb, LDAPS), {cores} CPUs; "
          f"{rounds} rounds of {warmup} s warm-up + {duration} s; medians of the rounds")
    for layout, by_label in runs.items():
        print()
        print(f"CPU layout {layout}: " + ("slapd alone on half the CPUs; daemons, PostgreSQL and the load generator on the other half"
                                          if layout == "split" else "every process on every CPU"))
        print(f"  {'':<28}{'ops/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}{'slapd':>9}{'daemons':>9}{'postgres':>9}")
        for op, clients in (("get", get_clients), ("patch", patch_clients)):
            print(f"  {'GET one user by userName' if op == 'get' else 'password change'}, {clients} clients")
            rel = {}
            for side, label in (("raw", "raw LDAP"), ("sqlite", "1 instance, SQLite"), ("pg", "2 instances, PostgreSQL")):
                key = f"{op}-{side}"
                if key not in by_label:
                    continue
                ratio = ""
                if side != "raw":
                    rs = ratios(layout, f"{op}-raw", key)
                    rel[side] = rs
                    ratio = f"{statistics.median(rs):.2f}"
                cpu = lambda p: fmt(med(layout, key, "cpu_ms_per_op." + p), ".3f")
                print(f"    {label:<26}{fmt(med(layout, key, 'ops_per_sec'), ',.0f'):>9}"
                      f"{fmt(med(layout, key, 'p50_ms'), '.2f'):>9}{fmt(med(layout, key, 'p99_ms'), '.2f'):>9}"
                      f"{ratio:>8}{cpu('slapd'):>9}{cpu('lockbridge') if side != 'raw' else '-':>9}"
                      f"{cpu('postgres') if side == 'pg' else '-':>9}")
            if "sqlite" in rel and "pg" in rel:
                a, b = statistics.median(rel["pg"]), statistics.median(rel["sqlite"])
                verdict = "no worse" if a >= b * 0.97 else "WORSE"
                print(f"    2 x PostgreSQL / 1 x SQLite: {a / b:.2f} ({verdict}; within 3 % counts as no worse)")
    print("(ratio: SCIM ops/s over raw ops/s of the same round; slapd, daemons, postgres: CPU ms per operation,"
          " both daemons summed, PostgreSQL with its backends)")

soak_rows = [parse(l) for l in open(soak) if l.strip()]
if soak_rows:
    print()
    print(f"Soak: {soak_secs} s, both PostgreSQL instances, every load at once (shared layout)")
    print(f"  {'load':<22}{'clients':>8}{'ops':>10}{'ops/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for f in soak_rows:
        print(f"  {f['mode']:<22}{f['clients']:>8}{int(f['ops']):>10,}{float(f['ops_per_sec']):>9,.0f}"
              f"{float(f['p50_ms']):>9.2f}{float(f['p99_ms']):>9.2f}{f['errors']:>8}")
    samples = defaultdict(list)
    for l in open(rss):
        if l.strip():
            f = parse(l)
            samples[f["daemon"]].append((int(f["t"]), int(f["rss_kb"]) / 1024))
    for daemon, pts in samples.items():
        # The first minute is warm-up (connection pools, caches, allocator arenas fill):
        # with three minutes or more, the baseline is the second minute.
        warm = 60 if pts[-1][0] >= 180 else 0
        label = "second minute" if warm else "first minute"
        base = [m for t, m in pts if warm <= t < warm + 60] or [pts[0][1]]
        last = [m for t, m in pts if t >= pts[-1][0] - 60] or [pts[-1][1]]
        b_mean, l_mean = statistics.mean(base), statistics.mean(last)
        flat = "flat" if l_mean <= b_mean * 1.10 + 4 else "GROWING"
        after = [(t, m) for t, m in pts if t >= warm]
        slope = ""
        if len(after) >= 3 and after[-1][0] > after[0][0]:
            tm = statistics.mean(t for t, _ in after)
            mm = statistics.mean(m for _, m in after)
            num = sum((t - tm) * (m - mm) for t, m in after)
            den = sum((t - tm) ** 2 for t, _ in after)
            slope = f", trend {num / den * 60:+.2f} MiB/min"
        print(f"  {daemon}: resident memory {label} {b_mean:.0f} MiB, last minute {l_mean:.0f} MiB, "
              f"peak {max(m for _, m in pts):.0f} MiB ({len(pts)} samples{slope}): {flat}")
PYEOF
