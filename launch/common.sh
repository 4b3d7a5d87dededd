# shellcheck shell=bash disable=SC2034
# Shared by the launch/ scripts (sourced, never run): flag and env-file parsing, dry-run, remote execution.
#
# Settings: every flag --some-name=VALUE (or --some-name VALUE) sets the shell variable SOME_NAME, which an env
# file may also set (see launch/env.example). The env file is --env=FILE, else $XMC_LAUNCH_ENV, else launch/env.sh
# when it exists. Flags override the env file. Everything after `--` is passed through (to gcloud or the trainer).

if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
  echo "launch/: needs bash >= 4.4 (this is ${BASH_VERSION}; on macOS: brew install bash)" >&2
  exit 1
fi

LAUNCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "${LAUNCH_DIR}/.." && pwd)
SCRIPT_NAME=$(basename "$0")
DRY_RUN=0
EXTRA_ARGS=()

# Defaults every script shares (an env file or a flag replaces them).
REMOTE_DIR=xmc_gan_jax        # the checkout on each worker, relative to its home directory
LOG_DIR=xmc_logs              # logs on each worker, relative to its home directory
BERT_DIR=bert-base-uncased    # HF-format BERT folder, relative to REMOTE_DIR (the coco configs' default path)
CONFIG="configs/coco.py:res=128"
POLL_INTERVAL=30
GCLOUD_SSH_FLAGS=""           # e.g. "--tunnel-through-iap" or "--internal-ip"

die() {
  echo "${SCRIPT_NAME}: error: $*" >&2
  exit 1
}

note() {
  echo "${SCRIPT_NAME}: $*" >&2
}

# Shell-quotes one word so that it can be pasted back into bash (and into a remote bash command).
quote() {
  local s=$1
  if [[ -n $s && $s =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//\'/\'\\\'\'}"
  fi
}

# Quotes each argument (the value part of --flag=value on its own) and joins them with spaces.
quote_args() {
  local out="" arg
  for arg in "$@"; do
    if [[ $arg =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
      out+="${BASH_REMATCH[1]}$(quote "${BASH_REMATCH[2]}") "
    else
      out+="$(quote "$arg") "
    fi
  done
  printf '%s' "${out% }"
}

# Runs a command, or with --dry-run prints it (pasteable) and runs nothing.
run() {
  if ((DRY_RUN)); then
    printf '%s\n' "$(quote_args "$@")"
  else
    "$@"
  fi
}

usage() {
  # The comment block after the shebang of the calling script is its help text.
  sed -n '2,/^[^#]/{/^#/!q;s/^# \{0,1\}//;p}' "$0"
}

# parse_args "OPTIONS" "SWITCHES" "$@": OPTIONS take a value, SWITCHES do not (both space-separated flag names
# without the dashes). --env, --dry-run and --help are always accepted.
parse_args() {
  local options=" $1 " switches=" $2 " env_file="" arg name value var
  shift 2
  local -a args=("$@")
  local i
  for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
      --) break ;;
      --env=*) env_file=${args[i]#--env=} ;;
      --env) env_file=${args[i + 1]:-} ;;
    esac
  done
  if [[ -z $env_file && -n ${XMC_LAUNCH_ENV:-} ]]; then env_file=$XMC_LAUNCH_ENV; fi
  if [[ -z $env_file && -f ${LAUNCH_DIR}/env.sh ]]; then env_file=${LAUNCH_DIR}/env.sh; fi
  if [[ -n $env_file ]]; then
    [[ -r $env_file && ! -d $env_file ]] || die "env file not found: ${env_file}"
    # shellcheck source=/dev/null
    source "$env_file"
  fi
  while (($# > 0)); do
    arg=$1
    shift
    case $arg in
      --) EXTRA_ARGS=("$@"); break ;;
      -h | --help) usage; exit 0 ;;
      --dry-run) DRY_RUN=1 ;;
      --env=*) ;;
      --env) shift ;;
      --*)
        name=${arg#--}
        value=""
        local has_value=0
        if [[ $name == *=* ]]; then
          value=${name#*=}
          name=${name%%=*}
          has_value=1
        fi
        var=${name//-/_}
        var=${var^^}
        if [[ $switches == *" ${name} "* ]]; then
          ((has_value == 0)) || die "--${name} takes no value"
          printf -v "$var" '%s' 1
        elif [[ $options == *" ${name} "* ]]; then
          if ((has_value == 0)); then
            (($# > 0)) || die "--${name} needs a value"
            value=$1
            shift
          fi
          printf -v "$var" '%s' "$value"
        else
          die "unknown flag --${name} (see ${SCRIPT_NAME} --help)"
        fi
        ;;
      *) die "unexpected argument '${arg}' (arguments for the command go after --; see --help)" ;;
    esac
  done
}

# require VAR...: each setting must be non-empty.
require() {
  local var flag
  for var in "$@"; do
    if [[ -z ${!var:-} ]]; then
      flag=${var,,}
      die "missing setting ${var}: pass --${flag//_/-}=... or set ${var} in the env file (see launch/env.example)"
    fi
  done
}

require_gs() {
  local var=$1
  require "$var"
  [[ ${!var} == gs://* ]] || die "${var} must be a gs:// path that every host can reach, got '${!var}'"
}

# --project, when set, for every gcloud call.
gcloud_project_flags() {
  if [[ -n ${PROJECT:-} ]]; then printf '%s\n' "--project=${PROJECT}"; fi
}

# The target of remote commands: a TPU VM (TPU_NAME, all its workers), a Compute Engine VM (VM) or plain ssh hosts
# (HOSTS). select_target sets TARGET to tpu, vm or hosts from whichever is given (VM and HOSTS win over TPU_NAME).
select_target() {
  if [[ -n ${HOSTS:-} ]]; then
    TARGET=hosts
  elif [[ -n ${VM:-} ]]; then
    TARGET=vm
    require ZONE
  elif [[ -n ${TPU_NAME:-} ]]; then
    TARGET=tpu
    require ZONE
  else
    die "missing setting TPU_NAME: pass --tpu-name=... (or --vm=NAME / --hosts=H1,H2), or set it in the env file (see launch/env.example)"
  fi
}

# remote WORKER SCRIPT: runs the bash SCRIPT on TPU worker WORKER (all, 0, 1, ...), on the VM, or on ssh host WORKER.
remote() {
  local worker=$1 script=$2
  local -a project ssh_flags
  mapfile -t project < <(gcloud_project_flags)
  read -r -a ssh_flags <<<"${GCLOUD_SSH_FLAGS}"
  case $TARGET in
    tpu) run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" "${project[@]}" "${ssh_flags[@]}" \
      --worker="$worker" --command="$script" ;;
    vm) run gcloud compute ssh "$VM" --zone="$ZONE" "${project[@]}" "${ssh_flags[@]}" --command="$script" ;;
    hosts) run ssh -o BatchMode=yes "$worker" "$script" ;;
    *) die "internal: unknown target '${TARGET}'" ;;
  esac
}

# The first lines of every remote script: strict mode, home directory, the env written by setup_workers.sh.
remote_prelude() {
  cat <<'EOF'
set -euo pipefail
cd "$HOME"
if [ -f "$HOME/.xmc_gan_env" ]; then . "$HOME/.xmc_gan_env"; fi
EOF
  echo "mkdir -p $(quote "$LOG_DIR") && log_dir=\$(cd $(quote "$LOG_DIR") && pwd)"
}

# cd into the checkout on the worker; fails clearly when setup_workers.sh has not run there.
remote_cd_checkout() {
  local dir
  dir=$(quote "$REMOTE_DIR")
  cat <<EOF
if [ ! -x ${dir}/.venv/bin/python ]; then
  echo "\$(hostname): no ${REMOTE_DIR}/.venv; run launch/setup_workers.sh first" >&2; exit 1
fi
cd ${dir}
EOF
}

# remote_launch LOG_NAME CMD...: a remote script that stops the previous xmc_gan_jax.main of this user (SIGTERM, so
# a trainer saves a checkpoint; SIGKILL after STOP_TIMEOUT s), then starts CMD detached (setsid nohup) with its
# output in LOG_DIR/LOG_NAME.log (the previous log is kept with a time stamp).
remote_launch() {
  local log_name=$1
  shift
  remote_prelude
  remote_cd_checkout
  # Anchored at the start of the command line so that it matches the python process only, never this shell
  # (whose own command line contains the module name too).
  cat <<EOF
pattern="^[^ ]*python[^ ]* -m xmc_gan_jax[.]main( |\\\$)"
if pkill -u "\$(id -u)" -f "\$pattern"; then
  echo "\$(hostname): stopping the previous xmc_gan_jax.main (SIGTERM: a trainer saves a checkpoint first)"
  for _ in \$(seq ${STOP_TIMEOUT:-300}); do pgrep -u "\$(id -u)" -f "\$pattern" >/dev/null || break; sleep 1; done
  pkill -9 -u "\$(id -u)" -f "\$pattern" || true
fi
rm -f /tmp/libtpu_lockfile
log=\$log_dir/${log_name}.log
if [ -f "\$log" ]; then mv "\$log" "\$log_dir/${log_name}.\$(date +%Y%m%d-%H%M%S).log"; fi
EOF
  if [[ -n ${DATA_DIR:-} ]]; then echo "export TFDS_DATA_DIR=$(quote "$DATA_DIR")"; fi
  echo "setsid nohup $(quote_args "$@") >\"\$log\" 2>&1 </dev/null &"
  echo "echo \"\$(hostname): started pid \$!, log \$log\""
}
