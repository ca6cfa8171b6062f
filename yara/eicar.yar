/*
  The EICAR anti-virus test file: harmless by design, used to check that scanning works.
  Written as hex so this rule file itself is not mistaken for the test file.
*/

rule EICAR_TEST_FILE : test malware
{
    meta:
        description = "It is the EICAR anti-virus test file. It is harmless, but it is handled like a virus so that scanning can be checked end to end."
        score = 10
        action = "quarantine"
    strings:
        $eicar = { 58 35 4F 21 50 25 40 41 50 5B 34 5C 50 5A 58 35 34 28 50 5E 29 37 43 43 29 37 7D 24
                   45 49 43 41 52 2D 53 54 41 4E 44 41 52 44 2D 41 4E 54 49 56 49 52 55 53 2D 54 45 53
                   54 2D 46 49 4C 45 21 24 48 2B 48 2A }
    condition:
        $eicar in (0..256) and filesize < 4096
}
