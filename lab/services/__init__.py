"""Real servers (nginx, dovecot, krb5kdc, slapd) and real clients: host-side preparation."""
