#!/bin/sh
# The first start of docker/compose.yml: the MQTT password for linewatch and the broker's password file for the
# user "linewatch", made once in the `secrets` volume (mounted at /secrets). Run by the one-shot `secrets`
# service (the mosquitto image: it has mosquitto_passwd); at every later `up` it finds them and changes nothing.
# To bring your own, put both files in the volume before the first `up` (docker/README.md, Secrets).
set -eu
dir=${1:-/secrets}
cd "$dir"
if [ -s mqtt_password ] && [ -s mosquitto_passwd ]; then
    echo "secrets: mqtt_password and mosquitto_passwd are there; kept"
    exit 0
fi
if [ -e mqtt_password ] || [ -e mosquitto_passwd ]; then
    echo "secrets: only one of mqtt_password and mosquitto_passwd is in $dir; give both, or neither" >&2
    exit 1
fi
umask 077
# 32 random characters; never on a command line (printf is a shell builtin)
head -c 48 /dev/urandom | base64 | tr -d '\n/+=' | cut -c1-32 > mqtt_password.new
printf 'linewatch:%s\n' "$(cat mqtt_password.new)" > mosquitto_passwd.new
mosquitto_passwd -U mosquitto_passwd.new  # hashes it in place
chown 10001:10001 mqtt_password.new && chmod 0400 mqtt_password.new      # the linewatch image's user
chown 1883:1883 mosquitto_passwd.new && chmod 0400 mosquitto_passwd.new  # the mosquitto image's user
mv mosquitto_passwd.new mosquitto_passwd
mv mqtt_password.new mqtt_password
echo "secrets: made a random MQTT password for the user linewatch (in the secrets volume)"
