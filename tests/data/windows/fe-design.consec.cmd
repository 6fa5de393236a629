rem KB 821839 design (b) on the front-end as Windows Server 2008 connection security rules:
rem HTTP, POP3 and IMAP to the back-end (10.10.2.20) required in ESP (3DES/SHA-1: what the
rem back-end's Respond Only default response rule accepts), computer preshared key. The file's name (fe-design) is the policy's name.
rem Syntax: "Netsh AdvFirewall Consec Commands", Windows Server 2008 R2 / Windows 7 Technical
rem Reference: add rule name= endpoint1= endpoint2= action= protocol= port2= auth1= auth1psk=
rem qmsecmethods=esp:integrity-encryption.
rem Import: lab import fe=fe-design.consec.cmd --into topologies/kb821839-b.yaml -o x.yaml
netsh advfirewall consec add rule name="HTTP to BE" endpoint1=any endpoint2=10.10.2.20 action=requireinrequireout protocol=tcp port2=80 auth1=computerpsk auth1psk="%IPSEC_PSK%" qmsecmethods=esp:sha1-3des
netsh advfirewall consec add rule name="POP3 to BE" endpoint1=any endpoint2=10.10.2.20 action=requireinrequireout protocol=tcp port2=110 auth1=computerpsk auth1psk="%IPSEC_PSK%" qmsecmethods=esp:sha1-3des
netsh advfirewall consec add rule name="IMAP to BE" endpoint1=any endpoint2=10.10.2.20 action=requireinrequireout protocol=tcp port2=143 auth1=computerpsk auth1psk="%IPSEC_PSK%" qmsecmethods=esp:sha1-3des
