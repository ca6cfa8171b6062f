/*
  PDF documents. Names may be written with #xx escapes (/J#61vaScript) to dodge simple
  filters, so the rules accept both spellings. PDF 1.5 object streams hide dictionaries
  in compressed streams: mailguard inflates them and scans them as view == "pdf-objects".
*/

rule PDF_JAVASCRIPT : pdf
{
    meta:
        description = "This PDF contains JavaScript (a program inside the document). Ordinary letters, invoices and statements do not need it."
        score = 3
        body_score = 0
    strings:
        $pdf = "%PDF-"
        $js_name = /\/J(a|#61)(v|#76)(a|#61)(S|#53)(c|#63)(r|#72)(i|#69)(p|#70)(t|#74)/
        $js_key = /\/J(S|#53)\s*[\(<\[\/0-9]/
    condition:
        not is_body and ($pdf in (0..1024) or view == "pdf-objects") and ($js_name or $js_key)
}

rule PDF_AUTO_ACTION : pdf
{
    meta:
        description = "This PDF is set to do something by itself when it is opened (an automatic action)."
        score = 1
        body_score = 0
    strings:
        $pdf = "%PDF-"
        $open = /\/O(p|#70)(e|#65)(n|#6[Ee])(A|#41)(c|#63)(t|#74)(i|#69)(o|#6[Ff])(n|#6[Ee])/
        // page-open (/O) or annotation page-open (/PO) triggers; form fields' own triggers do not count
        $aa_open = /\/A(A|#41)\s*<<[^>]{0,100}\/P?O\s*[0-9<]/
    condition:
        not is_body and ($pdf in (0..1024) or view == "pdf-objects") and ($open or $aa_open)
}

rule PDF_JAVASCRIPT_ON_OPEN : pdf malware
{
    meta:
        description = "This PDF runs JavaScript automatically when it is opened, a technique used by malicious PDFs."
        score = 6
        body_score = 0
    strings:
        $pdf = "%PDF-"
        $open = /\/O(p|#70)(e|#65)(n|#6[Ee])(A|#41)(c|#63)(t|#74)(i|#69)(o|#6[Ff])(n|#6[Ee])/
        $aa_open = /\/A(A|#41)\s*<<[^>]{0,100}\/P?O\s*[0-9<]/
        $open_js = /\/OpenAction\s*<<[^>]{0,300}\/(S\s*\/JavaScript|JS\s*[\(<])/
        $aa_open_js = /\/AA\s*<<[^>]{0,100}\/P?O\s*<<[^>]{0,300}\/(S\s*\/JavaScript|JS\s*[\(<])/
        $js_name = /\/J(a|#61)(v|#76)(a|#61)(S|#53)(c|#63)(r|#72)(i|#69)(p|#70)(t|#74)/
        $js_key = /\/J(S|#53)\s*[\(<\[\/0-9]/
        // fillable forms carry scripts for their fields; without a form, script plus an open action is the attack shape
        $acroform = "/AcroForm"
    condition:
        not is_body and ($pdf in (0..1024) or view == "pdf-objects") and
        ($open_js or $aa_open_js or ($open or $aa_open) and ($js_name or $js_key) and not $acroform)
}

rule PDF_LAUNCH_ACTION : pdf malware
{
    meta:
        description = "This PDF contains a Launch action that tries to start a program or open another file on this computer."
        score = 9
        action = "quarantine"
        body_score = 0
    strings:
        $pdf = "%PDF-"
        $launch = /\/L(a|#61)(u|#75)(n|#6[Ee])(c|#63)(h|#68)[\s\/<>\[\(]/
    condition:
        not is_body and ($pdf in (0..1024) or view == "pdf-objects") and $launch
}

rule PDF_EMBEDDED_FILE : pdf
{
    meta:
        description = "This PDF has another file packed inside it. Attached files inside PDFs can hide programs or other dangerous files."
        score = 4
        body_score = 0
    strings:
        $pdf = "%PDF-"
        $embedded = /\/E(m|#6[Dd])(b|#62)(e|#65)(d|#64)(d|#64)(e|#65)(d|#64)(F|#46)(i|#69)(l|#6[Cc])(e|#65)/
    condition:
        not is_body and ($pdf in (0..1024) or view == "pdf-objects") and $embedded
}

rule PDF_EMBEDDED_EXECUTABLE_NAME : pdf malware
{
    meta:
        description = "This PDF carries an embedded program or script (judging by the file name inside it), or JavaScript that extracts and opens one."
        score = 9
        action = "quarantine"
        body_score = 0
    strings:
        $pdf = "%PDF-"
        $name = /\/U?F\s*\([^)\r\n]{1,200}\.(exe|scr|pif|com|cpl|js|jse|vbs|vbe|wsf|hta|bat|cmd|ps1|lnk|msi|jar|chm|iso|img|vhd|vhdx|url|library-ms|one)\)/ nocase
        $export = /exportDataObject\s*\([^)]{0,200}nLaunch\s*:\s*[12]/ nocase
    condition:
        not is_body and ($pdf in (0..1024) or view == "pdf-objects") and ($name or $export)
}

rule PDF_FORM_SUBMIT_EXTERNAL : pdf phishing
{
    meta:
        description = "This PDF contains a form that sends what you type in it to a web site. Never type passwords or card numbers into a PDF you received by email."
        score = 5
        body_score = 0
    strings:
        $pdf = "%PDF-"
        $submit = /\/S(u|#75)(b|#62)(m|#6[Dd])(i|#69)(t|#74)(F|#46)(o|#6[Ff])(r|#72)(m|#6[Dd])/
        $url = /\/F\s*\(\s*https?:\/\// nocase
        $url_spec = /\/FS\s*\/URL/
    condition:
        not is_body and ($pdf in (0..1024) or view == "pdf-objects") and $submit and ($url or $url_spec)
}
