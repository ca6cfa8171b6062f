/*
  Programs. A program sent by email runs with the reader's rights as soon as it is opened,
  whatever its name says; no practice needs to receive one by email.
*/

rule EXECUTABLE_WINDOWS_PE : executable malware
{
    meta:
        description = "It is a Windows program (.exe, .dll, .scr or similar). Opening it would run software on this computer; real documents are never programs."
        score = 10
        action = "quarantine"
    condition:
        filesize > 64 and uint16(0) == 0x5A4D and uint32(0x3C) < filesize - 4 and
        uint32(uint32(0x3C)) == 0x00004550
}

rule EXECUTABLE_LINUX_ELF : executable malware
{
    meta:
        description = "It is a Linux or Unix program (ELF). Real documents are never programs."
        score = 10
        action = "quarantine"
    condition:
        filesize > 52 and uint32(0) == 0x464C457F and uint8(4) <= 2 and uint8(5) <= 2 and
        (uint16(16) == 2 or uint16(16) == 3 or uint16be(16) == 2 or uint16be(16) == 3)
}

rule EXECUTABLE_MACOS_MACHO : executable malware
{
    meta:
        description = "It is a Mac program (Mach-O). Real documents are never programs."
        score = 10
        action = "quarantine"
    condition:
        filesize > 28 and (
            uint32(0) == 0xFEEDFACE or uint32(0) == 0xFEEDFACF or
            uint32(0) == 0xCEFAEDFE or uint32(0) == 0xCFFAEDFE or
            // universal ("fat") binary; Java class files share the magic but have a version >= 45 here
            (uint32be(0) == 0xCAFEBABE and uint32be(4) > 0 and uint32be(4) < 20)
        )
}

rule EXECUTABLE_EMBEDDED_PE : executable malware
{
    meta:
        description = "A Windows program is hidden inside this file (for example inside a document or an installer). Opening it may run that program."
        score = 9
        action = "quarantine"
    strings:
        $stub = "This program cannot be run in DOS mode"
        $stub_hex = "546869732070726f6772616d2063616e6e6f742062652072756e20696e20444f53206d6f6465" nocase
    condition:
        uint16(0) != 0x5A4D and ($stub or $stub_hex)
}

rule INSTALLER_WINDOWS_MSI : executable malware
{
    meta:
        description = "It is a Windows installer package (.msi). Opening it would install software on this computer."
        score = 10
        action = "quarantine"
    strings:
        // CLSID {000C1084-0000-0000-C000-000000000046}, the class of an MSI package's root storage
        $msi_clsid = { 84 10 0C 00 00 00 00 00 C0 00 00 00 00 00 00 46 }
    condition:
        uint32(0) == 0xE011CFD0 and uint32(4) == 0xE11AB1A1 and $msi_clsid
}

rule SHORTCUT_WINDOWS_LNK : executable malware
{
    meta:
        description = "It is a Windows shortcut (.lnk). Shortcuts sent by email are a common way to run a hidden command when clicked."
        score = 10
        action = "quarantine"
    condition:
        filesize > 76 and uint32(0) == 0x0000004C and
        uint32(4) == 0x00021401 and uint32(8) == 0x00000000 and uint32(12) == 0x000000C0 and uint32(16) == 0x46000000
}

rule HELP_FILE_WINDOWS_CHM : executable malware
{
    meta:
        description = "It is a compiled Windows help file (.chm). These can run programs when opened and are used to spread malware."
        score = 10
        action = "quarantine"
    condition:
        filesize > 96 and uint32(0) == 0x46535449 and uint32(4) == 3
}

rule JAVA_ARCHIVE_JAR : executable
{
    meta:
        description = "It is a Java program (.jar). Opening it would run software on this computer if Java is installed."
        score = 8
    strings:
        $manifest = "META-INF/MANIFEST.MF"
        $class = ".class"
    condition:
        uint32(0) == 0x04034B50 and $manifest and $class
}

rule INSTALLER_WINDOWS_MSIX : executable malware
{
    meta:
        description = "It is a Windows app installer package (.msix or .appx). Opening it would install software on this computer."
        score = 10
        action = "quarantine"
    strings:
        $manifest = "AppxManifest.xml"
        $signature = "AppxSignature.p7x"
        $bundle = "AppxMetadata/AppxBundleManifest.xml"
    condition:
        uint32(0) == 0x04034B50 and ($manifest and $signature or $bundle)
}
