#!/usr/bin/env bash
# Installs this project on every worker of a TPU VM (or on a GPU VM / ssh hosts): Python 3.11 venv,
# jax[tpu] at the project's jax pin (it brings the matching libtpu), this repository at one commit, the pinned
# requirements (as `make install`), the BERT folder, and TFDS_DATA_DIR on GCS. Re-running updates to a new commit.
#
#   launch/setup_workers.sh --tpu-name=xmc --zone=us-central2-b --data-dir=gs://BUCKET/tensorflow_datasets
#
# Settings (flag or env file variable; see launch/env.example):
#   --tpu-name TPU_NAME               TPU VM; runs on --worker=all (or --vm VM / --hosts H1,H2 for GPU machines)
#   --zone ZONE                       (required with --tpu-name / --vm)
#   --repo REPO                       git URL the workers clone (default: this checkout's `origin`)
#   --commit COMMIT                   (default: this checkout's HEAD; push it first)
#   --platform PLATFORM               tpu (default with --tpu-name), gpu (default otherwise: jax[cuda12]) or cpu
#   --data-dir DATA_DIR               gs:// TFDS data dir, exported as TFDS_DATA_DIR on the workers
#   --bert-gcs BERT_GCS               gs:// copy of the BERT folder (default: download bert-base-uncased from HF)
#   --bert-dir BERT_DIR               where it goes, relative to REMOTE_DIR (default bert-base-uncased)
#   --remote-dir REMOTE_DIR           checkout on the workers, relative to home (default xmc_gan_jax)
#   --python PYTHON                   interpreter for the venv (default python3.11; installed from the deadsnakes
#                                     PPA on Ubuntu when missing)
#   --project PROJECT, --gcloud-ssh-flags GCLOUD_SSH_FLAGS (e.g. "--tunnel-through-iap")
#   --env FILE, --dry-run (print the commands, run nothing), --help
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PYTHON=python3.11
parse_args "tpu-name vm hosts zone repo commit platform data-dir bert-gcs bert-dir remote-dir python project
  gcloud-ssh-flags" "" "$@"
select_target
if [[ -z ${PLATFORM:-} ]]; then
  if [[ $TARGET == tpu ]]; then PLATFORM=tpu; else PLATFORM=gpu; fi
fi
case $PLATFORM in
  tpu) jax_extra="[tpu]" ;;
  gpu) jax_extra="[cuda12]" ;;
  cpu) jax_extra="" ;;
  *) die "--platform must be tpu, gpu or cpu, got '${PLATFORM}'" ;;
esac
if [[ -z ${REPO:-} ]]; then
  REPO=$(git -C "$REPO_ROOT" remote get-url origin 2>/dev/null || true)
  [[ -n $REPO ]] || die "missing setting REPO: pass --repo=GIT_URL or set REPO in the env file (this checkout has no origin)"
fi
if [[ -z ${COMMIT:-} ]]; then
  COMMIT=$(git -C "$REPO_ROOT" rev-parse HEAD 2>/dev/null) || die "missing setting COMMIT: pass --commit=SHA"
  if [[ -n $(git -C "$REPO_ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    note "warning: this checkout has uncommitted changes; the workers get commit ${COMMIT} without them"
  fi
fi
[[ -z ${DATA_DIR:-} ]] || require_gs DATA_DIR
[[ -z ${BERT_GCS:-} ]] || require_gs BERT_GCS
jax_version=$(sed -n 's/^jax==//p' "${REPO_ROOT}/constraints.txt")
[[ -n $jax_version ]] || die "no jax==VERSION line in ${REPO_ROOT}/constraints.txt"

dir=$(quote "$REMOTE_DIR")
py=$(quote "$PYTHON")
bert=$(quote "$BERT_DIR")
script="$(remote_prelude)
if ! command -v ${py} >/dev/null 2>&1 || ! ${py} -c \"import ensurepip\" >/dev/null 2>&1; then
  echo \"\$(hostname): installing ${PYTHON} (deadsnakes PPA)\"
  apt=\"sudo DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600\"
  \$apt update && \$apt install software-properties-common
  sudo add-apt-repository -y ppa:deadsnakes/ppa
  \$apt update && \$apt install ${py} ${py}-venv
fi
if [ ! -d ${dir}/.git ]; then git clone -q $(quote "$REPO") ${dir}; fi
cd ${dir}
git remote set-url origin $(quote "$REPO")
git fetch -q origin
git cat-file -e \"$(quote "$COMMIT")^{commit}\" 2>/dev/null || git fetch -q origin $(quote "$COMMIT")
git checkout -q --force --detach $(quote "$COMMIT")
if [ ! -x .venv/bin/python ]; then ${py} -m venv .venv; fi
pip=\".venv/bin/python -m pip install -q\"
\$pip --upgrade pip
\$pip -r requirements.txt -c constraints.txt
\$pip --no-deps -r requirements-nodeps.txt
\$pip --no-deps -e .
\$pip \"jax${jax_extra}==${jax_version}\" -c constraints.txt"
if [[ -n ${BERT_GCS:-} ]]; then
  script+="
mkdir -p ${bert} && gsutil -m -q rsync -r $(quote "$BERT_GCS") ${bert}"
else
  script+="
if [ ! -f ${bert}/model.safetensors ]; then
  \$pip \"huggingface_hub[cli]\" -c constraints.txt
  if [ -x .venv/bin/hf ]; then hf=.venv/bin/hf; else hf=.venv/bin/huggingface-cli; fi
  \$hf download bert-base-uncased config.json vocab.txt tokenizer_config.json tokenizer.json model.safetensors --local-dir ${bert}
fi"
fi
if [[ -n ${DATA_DIR:-} ]]; then
  script+="
echo export TFDS_DATA_DIR=$(quote "$(quote "$DATA_DIR")") >\"\$HOME/.xmc_gan_env\""
fi
script+="
.venv/bin/python -c 'import jax; b = jax.default_backend(); print(jax.process_index(), \"jax\", jax.__version__, b, jax.local_device_count(), \"local devices\"); raise SystemExit(b != \"${PLATFORM}\")' \\
  || { echo \"\$(hostname): JAX does not see a ${PLATFORM}\" >&2; exit 1; }
echo \"\$(hostname): ready at commit \$(git rev-parse --short HEAD)\""

if [[ $TARGET == hosts ]]; then
  IFS=, read -r -a hosts <<<"$HOSTS"
  for host in "${hosts[@]}"; do remote "$host" "$script"; done
else
  remote all "$script"
fi
((DRY_RUN)) || note "done: commit ${COMMIT} with jax${jax_extra}==${jax_version}; next: launch/train.sh"
