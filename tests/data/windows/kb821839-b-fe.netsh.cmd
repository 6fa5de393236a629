:: KB 821839 design (b) on the front-end (10.10.1.10): HTTP, POP3 and IMAP to the back-end
:: (10.10.2.20) in ESP, transport mode, 3DES/SHA1; everything else untouched.
:: Syntax: "Netsh commands for Internet Protocol security (IPsec)", Windows Server 2003
:: Technical Reference (netsh ipsec static add policy | filterlist | filter | filteraction |
:: rule, set policy ... assign=yes; netsh ipsec dynamic set config property=ipsecexempt).
:: Import: lab import fe=kb821839-b-fe.netsh.cmd --into topologies/kb821839-b.yaml -o x.yaml
@echo off
netsh ipsec static delete all
netsh ipsec static add policy name="FE Design" description="Front-end to back-end: HTTP, POP3, IMAP in ESP" activatedefaultrule=yes mmsecmethods="3DES-SHA1-2"

netsh ipsec static add filterlist name="HTTP to BE"
netsh ipsec static add filter filterlist="HTTP to BE" srcaddr=me dstaddr=10.10.2.20 protocol=TCP srcport=0 dstport=80 mirrored=yes
netsh ipsec static add filterlist name="POP3 to BE"
netsh ipsec static add filter filterlist="POP3 to BE" srcaddr=me dstaddr=10.10.2.20 protocol=TCP srcport=0 dstport=110 mirrored=yes
netsh ipsec static add filterlist name="IMAP to BE"
netsh ipsec static add filter filterlist="IMAP to BE" srcaddr=me dstaddr=10.10.2.20 protocol=TCP srcport=0 dstport=143 mirrored=yes

netsh ipsec static add filteraction name="Require ESP" action=negotiate inpass=no soft=no qmpfs=no qmsecmethods="ESP[3DES,SHA1]"

netsh ipsec static add rule name="HTTP" policy="FE Design" filterlist="HTTP to BE" filteraction="Require ESP" psk="%IPSEC_PSK%"
netsh ipsec static add rule name="POP3" policy="FE Design" filterlist="POP3 to BE" filteraction="Require ESP" psk="%IPSEC_PSK%"
netsh ipsec static add rule name="IMAP" policy="FE Design" filterlist="IMAP to BE" filteraction="Require ESP" psk="%IPSEC_PSK%"

netsh ipsec static set policy name="FE Design" assign=yes
netsh ipsec dynamic set config property=ipsecexempt value=3
