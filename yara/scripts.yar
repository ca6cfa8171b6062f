/*
  Script droppers: small programs for Windows' built-in script hosts (JScript, VBScript,
  HTA, WSF, PowerShell, batch) whose job is to fetch and run the real malware. Bodies of
  HTML mail never run scripts, so these rules count only in attached files.
*/

rule SCRIPT_JSCRIPT_DROPPER : script malware
{
    meta:
        description = "It is a Windows script (JScript) that can run commands or download files. Double-clicking it would run it."
        score = 9
        action = "quarantine"
        body_score = 0
    strings:
        $ax = /new\s+ActiveXObject\s*\(/ nocase
        $wsc = "WScript.CreateObject" nocase
        $shell = "WScript.Shell" nocase
        $shellapp = "Shell.Application" nocase
        $http = /(MSXML2\.XMLHTTP|WinHttp\.WinHttpRequest|MSXML2\.ServerXMLHTTP)/ nocase
        $stream = "ADODB.Stream" nocase
        $run = /\.(Run|Exec|ShellExecute)\s*\(/ nocase
        $save = /\.SaveToFile\s*\(/ nocase
    condition:
        not is_body and filesize < 5MB and ($ax or $wsc) and
        (($shell or $shellapp) and $run or $http and ($stream or $save or $run))
}

rule SCRIPT_VBSCRIPT_DROPPER : script malware
{
    meta:
        description = "It is a Windows script (VBScript) that can run commands or download files. Double-clicking it would run it."
        score = 9
        action = "quarantine"
        body_score = 0
    strings:
        $co = /CreateObject\s*\(\s*"/ nocase
        $shell = /"(WScript\.Shell|Shell\.Application)"/ nocase
        $http = /"(MSXML2\.XMLHTTP|Microsoft\.XMLHTTP|WinHttp\.WinHttpRequest\.5\.1|MSXML2\.ServerXMLHTTP)"/ nocase
        $stream = "\"ADODB.Stream\"" nocase
        $run = /\.(Run|Exec|ShellExecute)[ (]/ nocase
        $save = ".SaveToFile" nocase
        $js_ax = "ActiveXObject" nocase
    condition:
        not is_body and view != "vba-source" and filesize < 5MB and $co and not $js_ax and
        ($shell and $run or $http and ($stream or $save or $run))
}

rule SCRIPT_ENCODED_VBE_JSE : script malware
{
    meta:
        description = "It is an encoded Windows script (.vbe or .jse), a program disguised so that it cannot be read."
        score = 9
        action = "quarantine"
        body_score = 0
    strings:
        $start = "#@~^"
        $end = "^#~@"
    condition:
        not is_body and $start in (0..1024) and $end
}

rule SCRIPT_HTA_APPLICATION : script malware
{
    meta:
        description = "It is an HTML application (.hta): a web page that runs as a program with full access to this computer."
        score = 9
        action = "quarantine"
        body_score = 4
        body_action = "none"
    strings:
        $hta = /<HTA:APPLICATION[\s>\/]/ nocase
    condition:
        $hta
}

rule SCRIPT_WSF_JOB : script malware
{
    meta:
        description = "It is a Windows Script File (.wsf), a program for the Windows script host."
        score = 9
        action = "quarantine"
        body_score = 0
    strings:
        $job = /<job[\s>]/ nocase
        $package = /<package[\s>]/ nocase
        $script = /<script\s[^>]{0,100}language\s*=\s*["']?(JScript|VBScript|JavaScript|VBS)/ nocase
    condition:
        not is_body and ($job or $package) and $script and
        (extension == "wsf" or extension == "wsc" or @job[1] < 512 or @package[1] < 512)
}

rule SCRIPT_POWERSHELL_ENCODED : script malware
{
    meta:
        description = "It contains a hidden (encoded) PowerShell command, a technique used to download and run malware without it being visible."
        score = 9
        action = "quarantine"
        body_score = 0
    strings:
        $ps = "powershell" nocase
        $pwsh = "pwsh" nocase
        $enc1 = /-enc(odedcommand)?\s+[A-Za-z0-9+\/=]{20}/ nocase
        $enc2 = /-ec\s+[A-Za-z0-9+\/=]{20}/ nocase
        $enc3 = / -e\s+[A-Za-z0-9+\/=]{40}/ nocase
        $b64 = /FromBase64String\s*\(/ nocase
        $iex = /(\bIEX\b|Invoke-Expression|\[ScriptBlock\]::Create)/ nocase
        $hidden = /-w(indowstyle)?\s+h(idden)?\b/ nocase
    condition:
        not is_body and filesize < 10MB and (
            ($ps or $pwsh) and any of ($enc*) or
            $b64 and $iex or
            ($ps or $pwsh) and $hidden and ($b64 or $iex)
        )
}

rule SCRIPT_POWERSHELL_DOWNLOAD : script malware
{
    meta:
        description = "It contains a PowerShell command that downloads something from the internet and runs it."
        score = 9
        action = "quarantine"
        body_score = 0
    strings:
        $wc = /New-Object\s+(System\.)?Net\.WebClient/ nocase
        $dls = /\.Download(String|File|Data)(Async)?\s*\(/ nocase
        $iwr = /(Invoke-WebRequest|Invoke-RestMethod|\biwr\b|\birm\b|Start-BitsTransfer)\s/ nocase
        $iex = /(\bIEX\b|Invoke-Expression)/ nocase
        $start1 = "Start-Process" nocase
        $start2 = /\bsaps\s/ nocase
        $start3 = ".Invoke()" nocase
        $http = /https?:\/\// nocase
    condition:
        not is_body and filesize < 10MB and $http and
        (($wc or $dls) and ($iex or any of ($start*) or $dls) or $iwr and ($iex or any of ($start*)))
}

rule SCRIPT_LOLBIN_DOWNLOAD : script malware
{
    meta:
        description = "It contains a command that uses a built-in Windows tool to download or run a program from the internet (a common malware trick)."
        score = 9
        action = "quarantine"
        body_score = 0
    strings:
        $certutil = /certutil(\.exe)?\s+[^\r\n]{0,80}-urlcache[^\r\n]{0,80}https?:\/\// nocase
        $bits = /bitsadmin(\.exe)?\s+[^\r\n]{0,40}\/transfer[^\r\n]{0,200}https?:\/\// nocase
        $mshta = /mshta(\.exe)?\s+["']?(https?:|vbscript:|javascript:)/ nocase
        $regsvr = /regsvr32(\.exe)?\s+[^\r\n]{0,80}\/i:\s*["']?https?:/ nocase
        $rundll = /rundll32(\.exe)?\s+[^\r\n]{0,40}javascript:/ nocase
        $curl = /(curl|wget)(\.exe)?\s+[^\r\n&|]{0,200}https?:\/\/[^\r\n]{0,300}(&&|&|\|\|)\s*(start|call|cmd|rundll32|regsvr32|msiexec)\b/ nocase
        $msiexec = /msiexec(\.exe)?\s+[^\r\n]{0,40}\/[iq][^\r\n]{0,40}https?:\/\// nocase
    condition:
        not is_body and filesize < 10MB and any of them
}
