#!/bin/sh
# Makes the secrets of a three-node NATS cluster and its broker instances
# (README "Running in production"), with openssl:
#
#   deploy/make-secrets.sh compose DIR      # for deploy/compose/compose.yaml (nodes n1, n2, n3)
#   deploy/make-secrets.sh kubernetes DIR   # for deploy/kubernetes (nodes nats-0..2.nats-headless)
#   deploy/make-secrets.sh embedded DIR     # for three brokers that are the cluster (broker1..3)
#
# DIR must not exist; keep it outside the repository (it is not a build input).
# It gets:
#   ca.pem, ca-key.pem           the deployment's own CA (keep ca-key.pem offline afterwards)
#   n1.pem, n1-key.pem, ...      compose: one certificate per NATS node, DNS name n1, n2, n3
#   nats-server.pem, -key.pem    kubernetes: one certificate for the three pods of the chart
#   broker1.pem, broker1-key.pem embedded: one route certificate per broker, DNS name broker1, ...
#   front.pem                    compose, embedded: HAProxy's HTTPS certificate and key in one file,
#                                DNS name $EPS_FRONT_NAME (default localhost), signed by this CA
#   ops.pem, ops-key.pem         the operator's client certificate (CN=eps-ops: system account)
#   inspect.pem, inspect-key.pem a read-only client certificate (CN=eps-inspect)
#   broker/                      what the broker instances share, mode 0700:
#     epsbroker.pem, epsbroker-key.pem   their NATS client certificate (CN=epsbroker; not embedded)
#     issuer-ed25519.pem                 the token issuer key (PKCS#8 Ed25519)
#     pseudonym-hmac.pem                 the pseudonym key (32 random bytes)
#     https.pem, https-key.pem           kubernetes: the brokers' HTTPS certificate (--tls-cert,
#                                        --tls-key; Secret epsbroker-https), DNS names of the
#                                        Service epsbroker in namespace $EPS_NAMESPACE (default eps)
#
# The FHIR API and its bearer tokens are served over HTTPS only: compose and
# embedded behind HAProxy, which terminates TLS with front.pem (a public
# certificate in its place for clients outside); Kubernetes by the brokers
# themselves. Clients trust ca.pem, or the CA of the certificate put in place.
#
# Node certificates serve both client TLS and the routes (server and client
# authentication): a route is accepted only with a certificate of this CA whose
# DNS name is one of the configured routes (verify_cert_and_check_known_urls).
# Client certificates carry no DNS name, so none of them can join as a route.
#
# compose, embedded: run as root; what the brokers read (broker/, and the route
# certificates of embedded) is then owned by uid 65532, the image's nonroot user,
# as the broker refuses key files that anyone else may read.
set -eu

mode=${1:-}
dir=${2:-}
case "$mode" in
compose) nodes="n1 n2 n3" ;;
kubernetes) nodes="" ;;
embedded) nodes="broker1 broker2 broker3" ;;
*)
	echo "usage: $0 compose|kubernetes|embedded DIR" >&2
	exit 2
	;;
esac
if [ -z "$dir" ] || [ -e "$dir" ]; then
	echo "$0: give a directory that does not exist yet" >&2
	exit 2
fi
command -v openssl >/dev/null || {
	echo "$0: needs openssl" >&2
	exit 1
}

umask 077
mkdir -p "$dir/broker"
cd "$dir"
days=825

openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	-keyout ca-key.pem -out ca.pem -days 3650 -subj "/CN=EPS NATS CA" \
	-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null

# cert NAME SUBJECT EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]: NAME.pem and NAME-key.pem, signed by the CA.
cert() {
	ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=$3"
	if [ -n "${4:-}" ]; then
		ext="$ext
subjectAltName=$4"
	fi
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$1-key.pem" -out "$1.csr" -subj "$2" 2>/dev/null
	printf '%s\n' "$ext" >"$1.ext"
	openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
		-days $days -out "$1.pem" -extfile "$1.ext" 2>/dev/null
	rm -f "$1.csr" "$1.ext"
}

if [ "$mode" = kubernetes ]; then
	cert nats-server "/CN=nats" serverAuth,clientAuth \
		"DNS:nats-0.nats-headless,DNS:nats-1.nats-headless,DNS:nats-2.nats-headless"
else
	for n in $nodes; do
		cert "$n" "/CN=$n" serverAuth,clientAuth "DNS:$n"
	done
fi
if [ "$mode" = kubernetes ]; then
	ns=${EPS_NAMESPACE:-eps}
	cert broker/https "/CN=epsbroker" serverAuth \
		"DNS:epsbroker,DNS:epsbroker.$ns,DNS:epsbroker.$ns.svc,DNS:epsbroker.$ns.svc.cluster.local"
else
	front=${EPS_FRONT_NAME:-localhost}
	cert front-crt "/CN=$front" serverAuth "DNS:$front"
	cat front-crt.pem front-crt-key.pem >front.pem
	rm -f front-crt.pem front-crt-key.pem
fi
if [ "$mode" != embedded ]; then
	cert ops "/CN=eps-ops" clientAuth
	cert inspect "/CN=eps-inspect" clientAuth
	cert broker/epsbroker "/CN=epsbroker" clientAuth
fi
rm -f ca.srl

openssl genpkey -algorithm ed25519 -out broker/issuer-ed25519.pem 2>/dev/null
{
	echo "-----BEGIN EPS PSEUDONYM KEY-----"
	openssl rand 32 | openssl base64
	echo "-----END EPS PSEUDONYM KEY-----"
} >broker/pseudonym-hmac.pem

chmod 0700 broker
chmod 0600 ./*.pem broker/*.pem
owned=broker
if [ "$mode" = embedded ]; then
	for n in $nodes; do owned="$owned $n.pem $n-key.pem"; done
fi
if [ "$mode" != kubernetes ]; then
	# The NATS containers read their files as root; the brokers as uid 65532;
	# HAProxy (the official image's user haproxy) as uid 99.
	chmod 0644 ca.pem
	if [ "$(id -u)" = 0 ]; then
		# shellcheck disable=SC2086 # one word per file
		chown -R 65532:65532 $owned
		chown 99:99 front.pem
	else
		echo "$0: not root: run  cd $dir && chown -R 65532:65532 $owned && chown 99:99 front.pem  as root before docker compose up" >&2
	fi
fi
echo "$dir"
