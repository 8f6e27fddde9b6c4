source .carry/setup.sh
el start
timeout 250 python3 .carry/diag.py $R/diag.json > $R/diag.txt 2>&1; el "diag exit $?"
finish
grep -v "^W1201\|^\s*$" $R/diag.txt | tail -60
