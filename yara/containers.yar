/*
  Containers and shortcuts that attackers send because Windows opens them with a double
  click: disk images (they once skipped the "downloaded from the internet" warning),
  OneNote notebooks with files inside, SVG images with scripts, internet shortcuts and
  library/search-connector files (which leak Windows passwords to a remote server).
*/

rule DISK_IMAGE_ISO : container malware
{
    meta:
        description = "It is a disk image (.iso). Disk images sent by email are used to hide programs from security checks; no ordinary business document comes as one."
        score = 8
        action = "quarantine"
    strings:
        $cd001 = "CD001"
        $bea01 = "BEA01"
        $nsr = /NSR0[23]/
    condition:
        not is_body and filesize > 0x8006 and
        ($cd001 at 0x8001 or $cd001 at 0x8801 or $cd001 at 0x9001 or $bea01 at 0x8001 or $bea01 at 0x8801 or
         $nsr at 0x8801 or $nsr at 0x9001)
}

rule DISK_IMAGE_FAT_IMG : container malware
{
    meta:
        description = "It is a raw disk image (.img). Disk images sent by email are used to hide programs from security checks."
        score = 8
        action = "quarantine"
    strings:
        $fat12 = "FAT12   "
        $fat16 = "FAT16   "
        $fat32 = "FAT32   "
        $ntfs = "NTFS    "
        $exfat = "EXFAT   "
    condition:
        not is_body and filesize >= 1024 and uint16(510) == 0xAA55 and
        (uint8(0) == 0xEB or uint8(0) == 0xE9) and
        ($fat12 at 54 or $fat16 at 54 or $fat32 at 82 or $ntfs at 3 or $exfat at 3)
}

rule DISK_IMAGE_VHD : container malware
{
    meta:
        description = "It is a virtual hard disk (.vhd, .vhdx or .vmdk). Disk images sent by email are used to hide programs from security checks."
        score = 8
        action = "quarantine"
    strings:
        $conectix = "conectix"
        $vhdx = "vhdxfile"
        $vmdk = "KDMV"
    condition:
        not is_body and filesize >= 512 and
        ($conectix at 0 or $conectix at (filesize - 512) or $conectix at (filesize - 511) or $vhdx at 0 or $vmdk at 0)
}

rule ONENOTE_EMBEDDED_FILE : container malware
{
    meta:
        description = "It is a OneNote notebook with a file packed inside it. Attackers hide programs behind a fake \"click to view\" button in such notebooks."
        score = 8
        action = "quarantine"
    strings:
        // FileDataStoreObject header {BDE316E7-2665-4511-A4C4-8D4D0B7A9EAC}: an embedded file
        $file_data = { E7 16 E3 BD 65 26 11 45 A4 C4 8D 4D 0B 7A 9E AC }
    condition:
        not is_body and
        // OneNote section header {7B5C52E4-D88C-4DA7-AEB1-5378D02996D3}
        uint32(0) == 0x7B5C52E4 and uint16(4) == 0xD88C and uint16(6) == 0x4DA7 and $file_data
}

rule SVG_SCRIPT : container phishing
{
    meta:
        description = "It is an SVG image that contains a program (script). Genuine pictures do not; SVG files with scripts open a phishing page or download malware in the browser."
        score = 8
        action = "quarantine"
        body_score = 0
    strings:
        $svg = /<svg[\s>]/ nocase
        $html = /<html[\s>]/ nocase
        $script = /<script[\s>]/ nocase
        $handler = /\son(load|error|click|mouseover|begin|end|focusin|activate)\s*=/ nocase
        $js_href = /href\s*=\s*["']\s*javascript:/ nocase
        $foreign_form = /<foreignObject[\s>][^\x00]{0,3000}<(form|input|iframe)[\s>]/ nocase
    condition:
        not is_body and $svg and (extension == "svg" or content_type contains "svg" or not ($html in (0..4096))) and
        ($script or $handler or $js_href or $foreign_form)
}

rule INTERNET_SHORTCUT_URL : shortcut phishing
{
    meta:
        description = "It is an internet shortcut (.url file). Opening it goes straight to a web site or file chosen by the sender; genuine mail sends links, not shortcut files."
        score = 7
        body_score = 0
    strings:
        $header = "[InternetShortcut]" nocase
        $url = /\bURL\s*=/ nocase
    condition:
        not is_body and $header in (0..1024) and $url
}

rule INTERNET_SHORTCUT_FILE_TARGET : shortcut malware
{
    meta:
        description = "This internet shortcut points to a program or a network share rather than a web page, a trick used to run malware or steal Windows passwords."
        score = 8
        action = "quarantine"
        body_score = 0
    strings:
        $header = "[InternetShortcut]" nocase
        $file = /\bURL\s*=\s*(file:|\\\\|smb:|search-ms:|search:|ms-msdt:)/ nocase
        $prog = /\bURL\s*=[^\r\n]{1,500}\.(exe|scr|hta|js|jse|vbs|vbe|wsf|bat|cmd|lnk|ps1|msi|cpl|dll|library-ms|searchconnector-ms)\s*(\r|\n|$)/ nocase
        $icon = /\bIconFile\s*=\s*(\\\\|file:\/\/[^\/])/ nocase
    condition:
        not is_body and $header in (0..1024) and ($file or $prog or $icon)
}

rule WINDOWS_LIBRARY_MS : shortcut malware
{
    meta:
        description = "It is a Windows library or search-connector file (.library-ms, .searchConnector-ms). Opening or even previewing it can connect to an attacker's server and leak Windows passwords."
        score = 9
        action = "quarantine"
        body_score = 0
    strings:
        $library = /<libraryDescription[\s>]/ nocase
        $connector = /<searchConnectorDescription[\s>]/ nocase
        $ns = "schemas.microsoft.com/windows/2009/" nocase
    condition:
        not is_body and ($library or $connector) and ($ns or extension == "library-ms" or extension == "searchconnector-ms")
}

rule APPLE_CONFIGURATION_PROFILE : shortcut phishing
{
    meta:
        description = "It is an Apple configuration profile (.mobileconfig). Installing it changes an iPhone's or Mac's settings, such as mail accounts, and should only come from your own IT support."
        score = 6
        body_score = 0
    strings:
        $plist = "<plist" nocase
        $payload = "<key>PayloadContent</key>"
        $type = "<key>PayloadType</key>"
    condition:
        not is_body and $plist and $payload and $type
}

rule APPLE_PROFILE_DEVICE_CONTROL : shortcut malware
{
    meta:
        description = "It is an Apple configuration profile that would install a security certificate, a VPN, a web proxy or remote management, handing control of the device's traffic to the sender."
        score = 9
        action = "quarantine"
        body_score = 0
    strings:
        $plist = "<plist" nocase
        $payload = "<key>PayloadContent</key>"
        $control = /<string>com\.apple\.(security\.root|security\.pkcs12|vpn\.managed|proxy\.http\.global|mdm|webcontent-filter|dnsSettings\.managed)<\/string>/
    condition:
        not is_body and $plist and $payload and $control
}
