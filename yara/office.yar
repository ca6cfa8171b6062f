/*
  Office documents: macros (VBA and Excel 4.0), DDE fields, remote templates, embedded
  objects and the Equation Editor exploit, RTF objects. Macro code is stored compressed;
  mailguard decompresses it with oletools and scans it as view == "vba-source".
*/

rule OFFICE_VBA_MACROS : office
{
    meta:
        description = "This Office document contains macros (small programs). Do not click \"Enable content\" unless you expected a document with macros from this sender."
        score = 4
        body_score = 0
    strings:
        $vba_stream = "_VBA_PROJECT" wide nocase
        $ooxml_vba = "vbaProject.bin" nocase
    condition:
        not is_body and (
            uint32(0) == 0xE011CFD0 and uint32(4) == 0xE11AB1A1 and $vba_stream or
            uint32(0) == 0x04034B50 and $ooxml_vba or
            view == "vba-source"
        )
}

rule OFFICE_AUTO_EXEC_MACRO : office malware
{
    meta:
        description = "This document contains macros that run by themselves as soon as it is opened (and macros are enabled), a typical way to install malware."
        score = 6
        body_score = 0
    strings:
        $sub = /(Sub|Function)\s+(AutoOpen|Auto_Open|AutoExec|AutoNew|Auto_New|AutoClose|Auto_Close|Document_Open|Document_Close|Document_New|DocumentOpen|DocumentBeforeClose|Workbook_Open|Workbook_Activate|Workbook_BeforeClose|Presentation_Open|App_DocumentOpen|[A-Za-z0-9]{1,40}_(Painted|Layout|GotFocus|Initialize|Activate|Change|Resize))\s*\(/ nocase
        $raw1 = "Document_Open" nocase
        $raw2 = "Workbook_Open" nocase
        $raw3 = "AutoOpen" nocase
        $raw4 = "Auto_Open" nocase
        $vba_stream = "_VBA_PROJECT" wide nocase
        $xlnm = "_xlnm.Auto_Open" nocase
        $xlnm_defined = /<definedName[^>]{0,200}name="Auto_Open/ nocase
    condition:
        not is_body and (
            view == "vba-source" and $sub or
            uint32(0) == 0xE011CFD0 and $vba_stream and any of ($raw*) or
            $xlnm or $xlnm_defined
        )
}

rule OFFICE_SUSPICIOUS_VBA_CALLS : office malware
{
    meta:
        description = "The document's macros can run programs, download files or call Windows directly, which ordinary business macros do not need."
        score = 6
        body_score = 0
    strings:
        $shell1 = /\bShell\s*\(/ nocase
        $shell2 = "WScript.Shell" nocase
        $shell3 = "Shell.Application" nocase
        $shell4 = "ShellExecute" nocase
        $net1 = "XMLHTTP" nocase
        $net2 = "URLDownloadToFile" nocase
        $net3 = "WinHttpRequest" nocase
        $net4 = "InternetOpenUrl" nocase
        $file1 = "ADODB.Stream" nocase
        $file2 = "SaveToFile" nocase
        $api1 = /Lib\s+"(kernel32|urlmon|shell32|ntdll|wininet)/ nocase
        $api2 = "VirtualAlloc" nocase
        $api3 = "RtlMoveMemory" nocase
        $api4 = "CreateThread" nocase
        $cmd1 = "powershell" nocase
        $cmd2 = /cmd(\.exe)?\s+\/[ck]\b/ nocase
        $cmd3 = "mshta" nocase
        $cmd4 = /winmgmts:/ nocase
        $cmd5 = "Win32_Process" nocase
        $obf1 = "CallByName" nocase
        $obf2 = "StrReverse" nocase
        $env = /Environ\s*\(\s*"(TEMP|TMP|APPDATA|USERPROFILE|PUBLIC)"/ nocase
    condition:
        view == "vba-source" and 2 of them
}

rule OFFICE_XLM_MACRO_SHEET : office malware
{
    meta:
        description = "This spreadsheet contains old-style Excel 4.0 macros, which today are used almost only by malware."
        score = 8
        action = "quarantine"
        body_score = 0
    strings:
        $workbook = "Workbook" wide
        // BIFF8 BOUNDSHEET record whose sheet type byte is 1: an Excel 4.0 macro sheet
        $boundsheet_xlm = { 85 00 ?? 00 ?? ?? ?? ?? (00 | 01 | 02) 01 }
        $ooxml_path = "xl/macrosheets/"
        $ooxml_type = "ms-excel.macrosheet+xml"
        $ooxml_sheet = "<xm:macrosheet"
        $ooxml_intl = "ms-excel.intlmacrosheet+xml"
    condition:
        not is_body and (
            uint32(0) == 0xE011CFD0 and $workbook and $boundsheet_xlm or
            uint32(0) == 0x04034B50 and $ooxml_path or
            $ooxml_type or $ooxml_sheet or $ooxml_intl
        )
}

rule OFFICE_DDE_FIELD : office malware
{
    meta:
        description = "This document contains a DDE field or formula that can start a program on this computer when the document is opened."
        score = 9
        action = "quarantine"
        body_score = 0
    strings:
        $ddeauto = /\bDDEAUTO\b/ nocase
        $instr = /instrText[^>]{0,80}>\s*"?\s*DDE\s/ nocase
        $fld = /w:instr="\s*DDE(AUTO)?\s/ nocase
        $rtf = /\\fldinst[^}]{0,80}\bDDE(AUTO)?\b/ nocase
        $xl_link = /ddeService="(cmd|powershell|mshta|msexcel|rundll32|regsvr32|certutil|wscript|cscript)/ nocase
        $formula = /(^|[\s,;"'])[=+\-@]\s*(cmd|mshta|powershell|pwsh|msexcel|rundll32|regsvr32|certutil|wscript|cscript|msiexec)(\.exe)?\s*\|/ nocase
    condition:
        not is_body and filesize < 20MB and any of them
}

rule OFFICE_REMOTE_TEMPLATE : office malware
{
    meta:
        description = "This document loads its template from the internet when opened (template injection), a way to fetch malicious macros or exploits after the document has passed checks."
        score = 9
        action = "quarantine"
        body_score = 0
    strings:
        $type_first = /attachedTemplate"[^>]{0,400}Target="(https?:|\\\\\\\\)/ nocase
        $target_first = /Target="(https?:|\\\\\\\\)[^"]{1,400}"[^>]{0,400}attachedTemplate"/ nocase
        $rtf_template = /\\\*\\template\s+(https?:|\\\\\\\\)/ nocase
    condition:
        not is_body and any of them
}

rule OFFICE_EXTERNAL_OLE_LINK : office malware
{
    meta:
        description = "This document links to an object on the internet that Office fetches when the document is opened (as in the \"Follina\" attacks)."
        score = 9
        action = "quarantine"
        body_score = 0
    strings:
        $type_first = /\/oleObject"[^>]{0,400}Target="(https?|mhtml):/ nocase
        $target_first = /Target="(https?|mhtml):[^"]{1,400}"[^>]{0,400}\/oleObject"/ nocase
    condition:
        not is_body and any of them
}

rule OFFICE_EMBEDDED_OLE_OBJECT : office
{
    meta:
        description = "This document has another file or object embedded in it. Embedded objects can hide programs that run when double-clicked."
        score = 3
        body_score = 0
    strings:
        $ooxml_path = /(word|xl|ppt)\/embeddings\/oleObject[0-9]{0,4}\.bin/
        $ooxml_tag = "<o:OLEObject"
        $native = "\x01Ole10Native" wide
        $objpool = "ObjectPool" wide
    condition:
        not is_body and any of them
}

rule OFFICE_OLE_PACKAGE_EXECUTABLE : office malware
{
    meta:
        description = "A program or script is packed inside this document as an embedded object, ready to run when double-clicked."
        score = 9
        action = "quarantine"
        body_score = 0
    strings:
        $native = "\x01Ole10Native" wide
        $native_hex = "4f006c006500310030004e00610074006900760065" nocase
        $package_hex = "5061636b61676500" nocase
        $ext = /\.(exe|scr|pif|com|cpl|js|jse|vbs|vbe|wsf|wsh|hta|bat|cmd|ps1|lnk|msi|jar|chm|iso|img|vhd|vhdx|url)\x00/ nocase
        $ext_hex = /2e(657865|736372|706966|6a73|6a7365|766273|766265|777366|687461|626174|636d64|707331|6c6e6b|6d7369|6a6172|63686d|69736f|75726c)00/ nocase
    condition:
        not is_body and ($native and $ext or ($native_hex or $package_hex) and $ext_hex)
}

rule OFFICE_EQUATION_EDITOR_EXPLOIT : office malware exploit
{
    meta:
        description = "This document contains an Equation Editor object, the component abused by a well-known exploit (CVE-2017-11882) that runs malware when the document is opened."
        score = 10
        action = "quarantine"
        body_score = 0
    strings:
        $clsid = { 02 CE 02 00 00 00 00 00 C0 00 00 00 00 00 00 46 }
        $clsid_hex = "02ce020000000000c000000000000046" nocase
        $progid = "Equation.3" nocase
        $progid_wide = "Equation.3" wide nocase
        $progid_hex = "4571756174696f6e2e33" nocase
        $native = "Equation Native" wide
    condition:
        not is_body and
        (uint32(0) == 0xE011CFD0 or uint32(0) == 0x74725C7B or uint32(0) == 0x04034B50 or $native) and
        any of them
}

rule RTF_EMBEDDED_OBJECT : office
{
    meta:
        description = "This RTF document carries an embedded object (possibly a program or another document)."
        score = 5
        body_score = 0
    strings:
        $object = /\\object(\\|\s|\{)/
        $objdata = "\\objdata"
        $objemb = "\\objemb"
        $objlink = /\\objaut?link/
        $ole_hex = "d0cf11e0a1b11ae1" nocase
    condition:
        not is_body and uint32(0) == 0x74725C7B and ($objdata or $objemb or $objlink or $object and $ole_hex)
}

rule RTF_OBJECT_AUTO_UPDATE : office malware
{
    meta:
        description = "This RTF document is set to load its embedded object automatically when opened, a technique used by exploits."
        score = 6
        body_score = 0
    strings:
        $update = "\\objupdate"
    condition:
        not is_body and uint32(0) == 0x74725C7B and $update
}

rule OFFICE_SYLK_MACRO : office malware
{
    meta:
        description = "It is an old-style Excel file (SYLK) with formulas that run commands or load code when it is opened."
        score = 9
        action = "quarantine"
        body_score = 0
    strings:
        $formula = /(^|\n)C;[^\r\n]{0,80};E[^\r\n]{0,200}(EXEC|CALL|REGISTER|RUN)\s*\(/ nocase
        $dde = /(^|\n)C;[^\r\n]{0,80};E[^\r\n]{0,40}(cmd|mshta|powershell|msexcel)\s*\|/ nocase
    condition:
        not is_body and uint32(0) == 0x503B4449 and ($formula or $dde)
}

rule OFFICE_EXCEL_WEB_QUERY : office malware
{
    meta:
        description = "It is an Excel web query file (.iqy). Opening it makes Excel fetch content from the internet, a known way to deliver malware."
        score = 9
        action = "quarantine"
        body_score = 0
    strings:
        $query = /^WEB\r?\n[0-9]\r?\n(https?|ftp):\/\// nocase
    condition:
        not is_body and $query at 0
}

rule WINDOWS_SETTINGCONTENT_MS : shortcut malware
{
    meta:
        description = "It is a Windows settings shortcut (.settingcontent-ms) that can run any command when opened."
        score = 9
        action = "quarantine"
        body_score = 0
    strings:
        $settings = /<PCSettings[\s>]/ nocase
        $deeplink = /<DeepLink[\s>]/ nocase
    condition:
        not is_body and $settings and $deeplink
}
