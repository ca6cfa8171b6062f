/*
  HTML attachments (and, counted less, HTML bodies). A browser runs an attached .html file
  with scripts and forms working; mail programs do not run a body's scripts, and genuine
  newsletters use forms, redirects and scripts, so body_score keeps bodies low or ignored.
*/

rule HTML_SMUGGLING : html malware
{
    meta:
        description = "This web page builds a file inside the browser and saves it to the computer (HTML smuggling), a way to sneak malware past email filters."
        score = 9
        action = "quarantine"
        body_score = 4
        body_action = "none"
    strings:
        $blob = /new\s+Blob\s*\(/ nocase
        $objurl = /URL\.createObjectURL\s*\(/ nocase
        $dl_prop = /\.download\s*=/ nocase
        $dl_attr = /<a\s[^>]{0,300}\bdownload\s*[=>]/ nocase
        $dl_set = /setAttribute\s*\(\s*["']download["']/ nocase
        $ms_save = /msSave(OrOpen)?Blob/
        $saveas = /\bsaveAs\s*\(\s*[a-zA-Z_$]/
        $atob = /\batob\s*\(/
        $bytes = "Uint8Array"
        $charcode = "charCodeAt"
    condition:
        ($blob or $objurl) and ($dl_prop or $dl_attr or $dl_set or $ms_save or $saveas) and ($atob or $bytes or $charcode)
}

rule HTML_DATA_URI_DOWNLOAD : html malware
{
    meta:
        description = "This web page carries a file hidden inside a link and offers it as a download, a way to sneak programs or archives past email filters."
        score = 8
        action = "quarantine"
        body_score = 3
        body_action = "none"
    strings:
        $data_file = /data:application\/(octet-stream|x-msdownload|x-msdos-program|zip|x-zip-compressed|x-iso9660-image|x-msi|x-ms-shortcut|vnd\.ms-|x-rar|x-7z|java-archive|hta)[^;,"']{0,40};base64,/ nocase
        $dl_attr = /\bdownload\s*=\s*["'][^"']{1,200}\.(exe|scr|zip|rar|7z|iso|img|vhd|vhdx|js|jse|vbs|hta|lnk|msi|one|bat|cmd|ps1|jar|docm|xlsm)["']/ nocase
    condition:
        $data_file or $dl_attr
}

rule HTML_SCRIPT_DECODES_CONTENT : html phishing
{
    meta:
        description = "This web page hides its real content and unpacks it with a script when opened, a trick phishing pages use to avoid detection."
        score = 5
        body_score = 0
    strings:
        $write_atob = /document\.write\s*\(\s*(atob|unescape|decodeURIComponent|window\.atob)\s*\(/ nocase
        $eval_atob = /\beval\s*\(\s*(atob|unescape|decodeURIComponent|window\.atob|String\.fromCharCode)\s*\(/ nocase
        $inner_atob = /\.innerHTML\s*=\s*(atob|unescape|decodeURIComponent|window\.atob)\s*\(/ nocase
        $func_eval = /new\s+Function\s*\(\s*(atob|unescape|decodeURIComponent)\s*\(/ nocase
    condition:
        not is_body and any of them
}

rule HTML_CREDENTIAL_FORM_OFFSITE : html phishing credential_form
{
    meta:
        description = "This page asks for a password and sends it to a web site. Real services never ask you to sign in through an email or an attached file."
        score = 8
        body_score = 6
    strings:
        $password = /<input\s[^>]{0,300}type\s*=\s*["']?password/ nocase
        $form_ext = /<form\s[^>]{0,300}action\s*=\s*["']?\s*(https?:)?\/\/[a-z0-9]/ nocase
        $post_js = /(\$\.(ajax|post)\s*\(|fetch\s*\(\s*["'`]https?:|XMLHttpRequest|\.open\s*\(\s*["']POST["']\s*,\s*["'`]https?:)/ nocase
    condition:
        $password and ($form_ext or not is_body and $post_js)
}

rule HTML_PASSWORD_FIELD_ATTACHMENT : html phishing credential_form
{
    meta:
        description = "This attached file is a web page with a password box. Sign-in pages sent as attachments are phishing: never type a password into one."
        score = 5
        body_score = 0
    strings:
        $password = /<input\s[^>]{0,300}type\s*=\s*["']?password/ nocase
    condition:
        not is_body and $password
}

rule HTML_EXFIL_ENDPOINT : html phishing
{
    meta:
        description = "This page sends what is typed into it to a chat bot or webhook (Telegram, Discord), which is how phishing kits collect stolen passwords."
        score = 9
        action = "quarantine"
        body_score = 4
        body_action = "none"
    strings:
        $telegram = /api\.telegram\.org\/bot[0-9]{5,}/ nocase
        $discord = /discord(app)?\.com\/api\/webhooks\// nocase
    condition:
        any of them
}

rule HTML_META_REFRESH : html phishing
{
    meta:
        description = "This attached web page sends the browser on to another web site as soon as it is opened."
        score = 6
        body_score = 1
    strings:
        $refresh = /<meta\s[^>]{0,200}http-equiv\s*=\s*["']?refresh["']?[^>]{0,200}url\s*=\s*["']?\s*(https?:|\/\/|data:|javascript:)/ nocase
        $refresh_rev = /<meta\s[^>]{0,200}content\s*=\s*["']?\s*[0-9]{1,4}\s*;\s*url\s*=\s*["']?\s*(https?:|\/\/|data:|javascript:)[^>]{0,300}http-equiv\s*=\s*["']?refresh/ nocase
    condition:
        any of them
}

rule HTML_SCRIPT_REDIRECT : html phishing
{
    meta:
        description = "This attached web page uses a script to send the browser on to another web site as soon as it is opened."
        score = 6
        body_score = 0
    strings:
        $assign = /(window|document|top|self)\.location(\.href)?\s*=\s*["'`]\s*https?:/ nocase
        $call = /location\.(replace|assign)\s*\(\s*["'`]\s*https?:/ nocase
        $open = /window\.open\s*\(\s*["'`]\s*https?:[^)]{0,300}["']_self["']/ nocase
        $autoclick = /onload\s*=\s*("[^"]{0,200}|'[^']{0,200})\.click\(\)/ nocase
    condition:
        not is_body and any of them
}

rule PROTOCOL_HANDLER_ABUSE : malware exploit
{
    meta:
        description = "It contains a special Windows link (search-ms:, ms-msdt:, ms-appinstaller: or similar) that attackers use to open remote programs or folders from an email."
        score = 9
        action = "quarantine"
        body_score = 6
        body_action = "none"
    strings:
        $search = /search-ms:[^\s"'<>]{0,300}(crumb=|location:|query=)/ nocase
        $msdt = /ms-msdt:\s*\/?id\s/ nocase
        $msdt2 = "ms-msdt:" nocase
        $officecmd = "ms-officecmd:" nocase
        $appinstaller = /ms-appinstaller:\?source=/ nocase
        $searchconn = /search:query=[^"'<>]{0,300}crumb=location:/ nocase
    condition:
        any of them
}
