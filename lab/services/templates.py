"""Configuration templates of the real servers (host side; rendered into each run's directory).

`@ROOT@` stands for the host's server directory on the guest's tmpfs; the guest substitutes it
when it copies the files there (lab.guest.servers). Every pid file, socket, log and database a
daemon writes lives under it, never on the host's file system.
"""

from __future__ import annotations

REALM = "LAB.TEST"
LDAP_SUFFIX = "dc=lab,dc=test"
PEOPLE = f"ou=people,{LDAP_SUFFIX}"


def nginx_conf(*, http: bool, https: bool, proxy_to: str | None, ssl_required: bool,
               auth: bool, host: str) -> str:
    """One nginx: HTTP on 80, HTTPS on 443 (lab CA certificate), a reverse proxy or a page."""
    if proxy_to:
        # As an Exchange front-end: the client's request, its Basic login included, goes on to
        # the back-end over plain HTTP; the back-end checks the login.
        content = (f"proxy_pass http://{proxy_to}:80; proxy_http_version 1.0; "
                   "proxy_set_header Host $host; proxy_connect_timeout 19s;")
    else:
        login = 'auth_basic "lab"; auth_basic_user_file @ROOT@/htpasswd;' if auth else ""
        content = f"{login} root @ROOT@/www; try_files /index.txt =404;"
    servers = []
    if http:
        body = ('return 403 "403.4 SSL required: use https\\n";' if ssl_required
                else f"location / {{ {content} }}")
        servers.append(f"server {{ listen 80; {body} }}")
    if https:
        servers.append("server { listen 443 ssl; ssl_certificate @ROOT@/tls/cert.pem; "
                       "ssl_certificate_key @ROOT@/tls/key.pem; ssl_protocols TLSv1.2 TLSv1.3; "
                       f"location / {{ {content} }} }}")
    temp = " ".join(f"{k}_temp_path @ROOT@/tmp/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""# nginx on {host}, rendered by lab.services for one run
daemon off;
master_process on;
worker_processes 1;
user root;
pid @ROOT@/run/nginx.pid;
error_log @ROOT@/log/nginx-error.log info;
events {{ worker_connections 64; }}
http {{
  default_type text/plain;
  log_format lab '$remote_addr $remote_port $msec $status "$request_uri" "$remote_user"';
  access_log @ROOT@/log/nginx-access.log lab;
  {temp}
  {chr(10).join('  ' + s for s in servers).strip()}
}}
"""


def dovecot_conf(host: str) -> str:
    return f"""# dovecot on {host}, rendered by lab.services for one run
protocols = imap pop3
listen = *
base_dir = @ROOT@/run/dovecot
state_dir = @ROOT@/state
log_path = @ROOT@/log/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %u
first_valid_uid = 8
first_valid_gid = 8
mail_location = maildir:@ROOT@/mail/%u
default_login_user = dovenull
default_internal_user = dovecot
passdb {{
  driver = passwd-file
  args = scheme=SSHA256 @ROOT@/dovecot-users
}}
userdb {{
  driver = static
  args = uid=mail gid=mail home=@ROOT@/mail/%u
}}
"""


def kdc_conf(root: str) -> str:
    return f"""[kdcdefaults]
 kdc_ports = 88
 kdc_tcp_ports = 88
[realms]
 {REALM} = {{
  database_name = {root}/kdc/principal
  key_stash_file = {root}/kdc/stash
  acl_file = {root}/kdc/kadm5.acl
  supported_enctypes = aes256-cts-hmac-sha1-96:normal
  max_life = 1h
 }}
[logging]
 kdc = FILE:{root}/log/krb5kdc.log
 admin_server = FILE:{root}/log/kadmin.log
 default = FILE:{root}/log/krb5lib.log
"""


def krb5_conf(kdc: str, tcp: bool) -> str:
    """A client's (or the KDC's own) krb5.conf; `tcp` forces TCP (udp_preference_limit = 1)."""
    return f"""[libdefaults]
 default_realm = {REALM}
 dns_lookup_kdc = false
 dns_lookup_realm = false
 rdns = false
 udp_preference_limit = {1 if tcp else 65535}
 permitted_enctypes = aes256-cts-hmac-sha1-96
[realms]
 {REALM} = {{
  kdc = {kdc}
 }}
"""


def slapd_conf(root: str) -> str:
    return f"""# slapd, rendered by lab.services
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {root}/run/slapd.pid
argsfile {root}/run/slapd.args
loglevel stats
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 16777216
suffix "{LDAP_SUFFIX}"
rootdn "cn=admin,{LDAP_SUFFIX}"
directory {root}/ldap/db
access to attrs=userPassword by anonymous auth by self read by * none
access to * by users read by * none
"""


BASE_LDIF = f"""dn: {LDAP_SUFFIX}
objectClass: dcObject
objectClass: organization
o: IPsec policy lab
dc: lab

dn: {PEOPLE}
objectClass: organizationalUnit
ou: people
"""


def user_ldif(uid: str, password_hash: str) -> str:
    return f"""dn: uid={uid},{PEOPLE}
objectClass: inetOrgPerson
uid: {uid}
cn: {uid}
sn: probe
userPassword: {password_hash}

"""


def mailbox_message(host: str, user: str) -> str:
    return (f"From: lab@{host}\r\nTo: {user}@{host}\r\nSubject: test mailbox of {user}\r\n"
            f"Message-ID: <{user}@{host}>\r\n\r\nThe lab's test message.\r\n")
