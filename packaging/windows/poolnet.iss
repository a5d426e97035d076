; Inno Setup 6 script for PoolNet on Windows: installs the PyInstaller bundle (dist\poolnet,
; built by packaging\poolnet.spec) with Start menu and desktop shortcuts, an uninstaller, and
; an inbound firewall rule for the pool's TCP port 3000 (private and domain networks only).
; Build: iscc /DAppVersion=0.1.0 packaging\windows\poolnet.iss  -> dist\PoolNet-0.1.0-setup.exe
; (.github/workflows/installers.yml passes the version from poolnet_desktop.__version__.)

#ifndef AppVersion
  #error Pass the version: iscc /DAppVersion=X.Y.Z packaging\windows\poolnet.iss
#endif
#define AppExe "poolnet-desktop.exe"
#define FirewallRule "PoolNet (TCP 3000)"

[Setup]
; AppId identifies PoolNet to Windows across versions (upgrades, uninstall): never change it.
AppId={{1432D534-9B61-428A-ADA2-187655D033A9}
AppName=PoolNet
AppVersion={#AppVersion}
AppPublisher=PoolNet
DefaultDirName={autopf}\PoolNet
DefaultGroupName=PoolNet
DisableProgramGroupPage=yes
; The firewall rule needs administrator rights.
PrivilegesRequired=admin
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
SourceDir=..\..
OutputDir=dist
OutputBaseFilename=PoolNet-{#AppVersion}-setup
SetupIconFile=resources\icons\poolnet.ico
UninstallDisplayIcon={app}\{#AppExe}
Compression=lzma2
SolidCompression=yes
WizardStyle=modern
; Closes a running PoolNet before files are replaced or removed.
CloseApplications=yes

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"

[Files]
Source: "dist\poolnet\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\PoolNet"; Filename: "{app}\{#AppExe}"
Name: "{group}\{cm:UninstallProgram,PoolNet}"; Filename: "{uninstallexe}"
Name: "{autodesktop}\PoolNet"; Filename: "{app}\{#AppExe}"; Tasks: desktopicon

[Run]
; Delete first so a reinstall does not add a second copy of the rule. The rule is by port, not
; by program, because both poolnet-desktop.exe and "poolnet.exe host" can host the pool.
; Discovery (mDNS, UDP 5353) relies on Windows' built-in "mDNS (UDP-In)" rule for private
; networks (not verified on a Windows machine yet).
Filename: "{sys}\netsh.exe"; Parameters: "advfirewall firewall delete rule name=""{#FirewallRule}"""; Flags: runhidden
Filename: "{sys}\netsh.exe"; Parameters: "advfirewall firewall add rule name=""{#FirewallRule}"" dir=in action=allow protocol=TCP localport=3000 profile=private,domain"; Flags: runhidden; StatusMsg: "Allowing pool connections (TCP 3000)..."
Filename: "{app}\{#AppExe}"; Description: "{cm:LaunchProgram,PoolNet}"; Flags: nowait postinstall skipifsilent

[UninstallRun]
Filename: "{sys}\netsh.exe"; Parameters: "advfirewall firewall delete rule name=""{#FirewallRule}"""; Flags: runhidden; RunOnceId: "RemoveFirewallRule"
