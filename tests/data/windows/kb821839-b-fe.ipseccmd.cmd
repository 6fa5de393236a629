rem KB 821839 design (b) on the front-end (10.10.1.10): HTTP, POP3 and IMAP to the back-end
rem (10.10.2.20) in ESP 3DES/SHA-1, as ipseccmd static-mode rules of one policy.
rem Syntax: ipseccmd usage, Windows XP / Server 2003 Support Tools (same flags as ipsecpol,
rem "IPSecPol Syntax", Windows 2000 Resource Kit): -w REG -p policy -r rule -f Src+Dst:port:protocol
rem (+ = mirrored, 0 = my address) -n ESP[ConfAlg,AuthAlg] -a PRESHARE:"key" -1s 3DES-SHA-2 -x.
rem Import: lab import fe=kb821839-b-fe.ipseccmd.cmd --into topologies/kb821839-b.yaml -o x.yaml
ipseccmd -w REG -p "FE Design" -r "HTTP to BE" -f 0+10.10.2.20:80:TCP -n ESP[3DES,SHA] -a PRESHARE:"%IPSEC_PSK%" -1s 3DES-SHA-2
ipseccmd -w REG -p "FE Design" -r "POP3 to BE" -f 0+10.10.2.20:110:TCP -n ESP[3DES,SHA] -a PRESHARE:"%IPSEC_PSK%"
ipseccmd -w REG -p "FE Design" -r "IMAP to BE" -f 0+10.10.2.20:143:TCP -n ESP[3DES,SHA] -a PRESHARE:"%IPSEC_PSK%"
ipseccmd -w REG -p "FE Design" -x
reg add HKLM\SYSTEM\CurrentControlSet\Services\IPSEC /v NoDefaultExempt /t REG_DWORD /d 3 /f
