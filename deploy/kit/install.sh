#!/bin/sh
# Install the edgewise agent from this kit (made by `edgewise kit`), with no index and no
# network: checks the kit's files, makes the service user and folders, builds the venv from
# wheels/, installs the config, identity and bundles, checks the agent's config, and
# installs and starts the systemd unit.
#
#   sudo sh install.sh                        /opt/edgewise, /etc/edgewise, /var/lib/edgewise
#   sh install.sh --prefix DIR --no-service   the same three under DIR; no user, no unit
#   --python PATH                             the interpreter (default: pythonX.Y of the kit)
#   --trust PUB                               an operator key the kit must be signed by
#                                             (besides those already in /etc/edgewise/trusted)
set -eu
kit=$(cd "$(dirname "$0")" && pwd)
prefix=""
service=1
python=""
trust=""
die() { echo "install.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; prefix=$2; shift 2 ;;
    --no-service) service=0; shift ;;
    --python) [ $# -ge 2 ] || die "--python needs a path"; python=$2; shift 2 ;;
    --trust) [ $# -ge 2 ] && [ -f "$2" ] || die "--trust needs a public key file"
             case "$2" in *[!A-Za-z0-9._/-]*) die "--trust: use a path of A-Z a-z 0-9 . _ - /" ;; esac
             trust="$trust $2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) die "unknown option $1 (--prefix DIR, --no-service, --python PATH, --trust PUB)" ;;
  esac
done
if [ -n "$prefix" ]; then
  case "$prefix" in /*) ;; *) prefix="$(pwd)/$prefix" ;; esac
  case "$prefix" in *[!A-Za-z0-9._/-]*) die "--prefix: use a path of A-Z a-z 0-9 . _ - /" ;; esac
fi
venv="$prefix/opt/edgewise"
etc="$prefix/etc/edgewise"
state="$prefix/var/lib/edgewise"

# 1. The kit is whole (a copy cut short, or changed on the way, stops here).
(cd "$kit" && sha256sum --quiet --strict -c SHA256SUMS) \
  || die "the kit's files do not match SHA256SUMS: copy the kit again"
field() { sed -n "s/^ *\"$1\": \"\\(.*\\)\",\{0,1\}$/\\1/p" "$kit/kit.json"; }
want_py=$(field python)
want_machine=$(field machine)
device=$(field device)

# 2. The interpreter the wheels were chosen for.
if [ -z "$python" ]; then
  python=python$want_py
  command -v "$python" >/dev/null 2>&1 || python=python3
fi
have=$("$python" -c 'import platform, sys; print("%d.%d %s" % (sys.version_info[0], sys.version_info[1], platform.machine()))' 2>/dev/null) \
  || die "no Python at '$python' (--python PATH)"
[ "$have" = "$want_py $want_machine" ] \
  || die "this kit is for CPython $want_py on $want_machine; $python is CPython $have: make one with edgewise kit --python ${have% *} --platform linux-${have#* }"

# 3. What Debian must provide (no wheel on the package index for this platform).
system_site=""
for pair in $(sed -n 's/^ *"\([a-z0-9_-]*\)": "\(python3-[a-z0-9-]*\)",\{0,1\}$/\1:\2/p' "$kit/kit.json"); do
  module=${pair%%:*}
  deb=${pair#*:}
  "$python" -c "import $module" 2>/dev/null \
    || die "needs Debian's $deb (no $module wheel exists for $want_machine): apt-get install $deb, then run this again"
  system_site=--system-site-packages
done

# 3b. Who made the kit: SHA256SUMS.sig against the operator keys this device trusts (those
# of an earlier install, and --trust). Checked with the installed agent's Python where
# there is one, so that a foreign kit is refused before anything is replaced.
signed=0
[ -f "$kit/SHA256SUMS.sig" ] && signed=1
[ "$signed" = 1 ] || [ -z "$trust" ] || die "--trust given, but the kit is not signed (edgewise kit --sign-key)"
keys="$trust"
for key in "$etc"/trusted/*.pub; do
  [ -f "$key" ] && keys="$keys $key"
done
verify() {  # verify PYTHON
  "$1" -c 'import sys; from edgewise.deploy.kit import verify_main; sys.exit(verify_main(sys.argv[1:]))' "$kit" $keys
}
verified=0
if [ "$signed" = 1 ] && [ -n "$keys" ] && [ -x "$venv/bin/python" ] \
   && "$venv/bin/python" -c 'from edgewise.deploy.kit import verify_main' 2>/dev/null; then
  verify "$venv/bin/python" || die "refusing the kit (nothing was changed)"
  verified=1
fi

# 4. The service user.
if [ "$service" = 1 ]; then
  [ "$(id -u)" = 0 ] || die "installing the service needs root (or: --prefix DIR --no-service)"
  if ! id edgewise >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/edgewise --no-create-home --shell /usr/sbin/nologin edgewise
  fi
fi

# 5. The venv, from the kit's wheels only (no index, no host pip configuration).
spec=$(field install)
pip_wheel=$(ls "$kit"/wheels/pip-*.whl | tail -1)
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
# --without-pip: Debian keeps ensurepip in python3-venv; pip comes from its wheel instead.
"$python" -m venv --without-pip $system_site "$venv"
# The caller's pip settings (an index, find-links, constraints) do not apply here.
for name in $(env | sed -n 's/^\(PIP_[A-Z0-9_]*\)=.*/\1/p'); do unset "$name"; done
PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
  "$venv/bin/python" "$pip_wheel/pip" install --quiet --no-cache-dir --no-index \
  --find-links "$kit/wheels" "$pip_wheel" "$spec" \
  || die "pip could not install $spec from the kit's wheels (see above)"
if [ "$signed" = 1 ] && [ -n "$keys" ] && [ "$verified" = 0 ]; then
  verify "$venv/bin/python" || { rm -rf "$venv"; die "refusing the kit"; }
elif [ "$signed" = 1 ] && [ -z "$keys" ]; then
  echo "install.sh: note: the kit is signed, but this device trusts no operator key yet; only its checksums were checked (--trust operator.pub checks the signature)" >&2
fi

# 6. Config, identity, trusted keys, bundles (a --wheels-only kit, for an image, has none).
umask 022
mkdir -p "$etc" "$state/bundles"
if [ ! -f "$kit/etc/agent.toml" ]; then
  [ "$service" = 1 ] && chown -R edgewise:edgewise "$state"
  echo "edgewise installed in $venv (no config in this kit: $etc/agent.toml is yours to add)"
  exit 0
fi
cp -pR "$kit/etc/." "$etc/"
sed -e "s#@ETC@#$etc#g" -e "s#@STATE@#$state#g" "$kit/etc/agent.toml" > "$etc/agent.toml"
for secret in "$etc/mqtt-password" "$etc/device.key"; do
  [ -f "$secret" ] && chmod 600 "$secret"
done
if [ -d "$kit/bundles" ]; then
  for bundle in "$kit"/bundles/*/; do
    name=$(basename "$bundle")
    rm -rf "$state/bundles/$name"
    cp -pR "$bundle" "$state/bundles/$name"
  done
fi
if [ "$service" = 1 ]; then
  chown -R edgewise:edgewise "$state"
  # The agent reads its identity as the service user; nobody else may.
  for secret in "$etc/mqtt-password" "$etc/device.key"; do
    [ -f "$secret" ] && chown edgewise:edgewise "$secret"
  done
fi

# 7. The agent loads this config and its bundles (no broker needed).
"$venv/bin/edgewise" agent --config "$etc/agent.toml" --check >/dev/null \
  || die "the installed agent refuses $etc/agent.toml (see above)"

# 8. The service.
if [ "$service" = 1 ]; then
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    install -m 644 "$kit/systemd/edgewise-agent.service" /etc/systemd/system/
    systemctl daemon-reload
    systemctl enable --now edgewise-agent
    echo "edgewise agent for $device installed and started: systemctl status edgewise-agent"
  else
    echo "edgewise agent for $device installed; no systemd here: start it with"
    echo "  $venv/bin/edgewise agent --config $etc/agent.toml --state-dir $state"
  fi
else
  echo "edgewise agent for $device installed in $venv; start it with"
  echo "  $venv/bin/edgewise agent --config $etc/agent.toml"
fi
