#!/usr/bin/env bash
# Mints a demo HS256 token for the notifications example (bash + openssl).
#
#   bash examples/notifications/mint-token.sh alice          # a subscriber token for alice
#   bash examples/notifications/mint-token.sh --publisher    # a publisher token (your backend)
#
# Signed with $SPOUT_JWT_SECRET, or the demo secret README.md states when it
# is unset. Valid for $TTL seconds (default 86400 = one day). Prints the token.
set -euo pipefail

secret="${SPOUT_JWT_SECRET:-spout-notifications-demo-secret-0123456789}"
ttl="${TTL:-86400}"

case "${1:-}" in
  "" | -h | --help)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
  --publisher)
    user="backend"
    aud="notifications-publish"
    ;;
  *)
    user="$1"
    aud="notifications"
    ;;
esac
if [[ ! "$user" =~ ^[A-Za-z0-9._@-]+$ ]]; then
  echo "mint-token.sh: a user is letters, digits, '.', '_', '@' and '-'" >&2
  exit 2
fi

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

now=$(date +%s)
header=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64url)
payload=$(printf '{"sub":"%s","topics":["notifications"],"aud":"%s","iat":%d,"exp":%d}' \
  "$user" "$aud" "$now" "$((now + ttl))" | b64url)
signature=$(printf '%s' "$header.$payload" | openssl dgst -sha256 -hmac "$secret" -binary | b64url)
printf '%s.%s.%s\n' "$header" "$payload" "$signature"
