"""The console's words in English, French and Arabic (right to left): one small catalogue.

A missing translation falls back to English; a test checks every key has all three.
"""

from __future__ import annotations

LANGUAGES = ("en", "fr", "ar")
RTL = frozenset({"ar"})
NAMES = {"en": "English", "fr": "Français", "ar": "العربية"}

# key: (en, fr, ar)
CATALOGUE: dict[str, tuple[str, str, str]] = {
    "console": ("Authority console", "Console de l'autorité", "وحدة تحكم الهيئة"),
    "skip": ("Skip to content", "Aller au contenu", "انتقل إلى المحتوى"),
    "language": ("Language", "Langue", "اللغة"),
    "main_menu": ("Main menu", "Menu principal", "القائمة الرئيسية"),
    "dashboard": ("Dashboard", "Tableau de bord", "لوحة المتابعة"),
    "entries": ("Entries", "Entrées", "الإدخالات"),
    "import": ("Import", "Import", "استيراد"),
    "publish": ("Publish", "Publier", "نشر"),
    "complaints": ("Complaints", "Réclamations", "الشكاوى"),
    "lifecycle": ("Lifecycle", "Cycle de vie", "دورة الحياة"),
    "compliance": ("Compliance", "Conformité", "الامتثال"),
    "audit": ("Audit log", "Journal d'audit", "سجل التدقيق"),
    "officers": ("Officers", "Agents", "الموظفون"),
    "sign_in": ("Sign in", "Se connecter", "تسجيل الدخول"),
    "sign_out": ("Sign out", "Se déconnecter", "تسجيل الخروج"),
    "sign_out_everywhere": (
        "Sign out everywhere",
        "Se déconnecter partout",
        "تسجيل الخروج من كل الأجهزة",
    ),
    "signed_in_as": ("Signed in as", "Connecté en tant que", "متصل باسم"),
    "name": ("Name", "Nom", "الاسم"),
    "password": ("Password", "Mot de passe", "كلمة المرور"),
    "totp": (
        "Code from the authenticator app",
        "Code de l'application d'authentification",
        "الرمز من تطبيق المصادقة",
    ),
    "sign_in_refused": (
        "Sign-in refused: check the name, password and code.",
        "Connexion refusée : vérifiez le nom, le mot de passe et le code.",
        "رُفض تسجيل الدخول: تحقق من الاسم وكلمة المرور والرمز.",
    ),
    "locked": (
        "Too many failed attempts: this account is locked for a while.",
        "Trop d'échecs : ce compte est bloqué pour un moment.",
        "محاولات فاشلة كثيرة: هذا الحساب مقفل لبعض الوقت.",
    ),
    "setup": ("Set up sign-in", "Configurer la connexion", "إعداد تسجيل الدخول"),
    "setup_code": ("Setup code", "Code de configuration", "رمز الإعداد"),
    "new_password": (
        "New password (at least 12 characters)",
        "Nouveau mot de passe (12 caractères au moins)",
        "كلمة مرور جديدة (12 حرفًا على الأقل)",
    ),
    "scan_qr": (
        "Scan this code with an authenticator app, or type the key, then enter the code it shows.",
        "Scannez ce code avec une application d'authentification, ou saisissez la clé, puis "
        "entrez le code affiché.",
        "امسح هذا الرمز بتطبيق مصادقة، أو اكتب المفتاح، ثم أدخل الرمز الذي يظهره.",
    ),
    "key": ("Key", "Clé", "المفتاح"),
    "continue": ("Continue", "Continuer", "متابعة"),
    "setup_done": (
        "Sign-in is set up. You may sign in now.",
        "La connexion est configurée. Vous pouvez vous connecter.",
        "تم إعداد تسجيل الدخول. يمكنك تسجيل الدخول الآن.",
    ),
    "serial": ("Published serial", "Numéro publié", "الرقم المنشور"),
    "pending_changes": ("Changes to publish", "Changements à publier", "تغييرات للنشر"),
    "by_status": ("Entries by status", "Entrées par état", "الإدخالات حسب الحالة"),
    "needs_me": ("Needs my attention", "À traiter par moi", "يحتاج إلى انتباهي"),
    "awaiting_my_approval": (
        "Entries awaiting approval by someone other than their author",
        "Entrées en attente d'approbation par une autre personne que leur auteur",
        "إدخالات تنتظر موافقة شخص غير كاتبها",
    ),
    "complaints_to_decide": (
        "Complaints to decide",
        "Réclamations à trancher",
        "شكاوى تنتظر القرار",
    ),
    "takedown_deadlines": ("Takedown deadlines", "Échéances de retrait", "مهل الإزالة"),
    "reviews_due": ("Reviews due", "Révisions dues", "مراجعات مستحقة"),
    "asps_late": (
        "ASPs overdue or alarmed",
        "FAI en retard ou en alerte",
        "مزودون متأخرون أو في حالة إنذار",
    ),
    "none": ("None.", "Aucun.", "لا شيء."),
    "search": ("Search", "Rechercher", "بحث"),
    "status": ("Status", "État", "الحالة"),
    "country": ("Hosting country", "Pays d'hébergement", "بلد الاستضافة"),
    "any": ("Any", "Tous", "الكل"),
    "filter": ("Filter", "Filtrer", "تصفية"),
    "value": ("Address", "Adresse", "العنوان"),
    "kind": ("Kind", "Type", "النوع"),
    "evidence": ("Evidence reference", "Référence de preuve", "مرجع الدليل"),
    "notes": ("Notes", "Notes", "ملاحظات"),
    "category": ("Category", "Catégorie", "الفئة"),
    "added_by": ("Added by", "Ajoutée par", "أضافه"),
    "approved_by": ("Approved by", "Approuvée par", "وافق عليه"),
    "created": ("Created", "Créée", "أنشئ"),
    "add_entry": ("Add an entry", "Ajouter une entrée", "إضافة إدخال"),
    "add": ("Add", "Ajouter", "إضافة"),
    "approve": ("Approve", "Approuver", "موافقة"),
    "reject": ("Reject", "Rejeter", "رفض"),
    "delist": ("Delist", "Retirer de la liste", "إزالة من القائمة"),
    "reason": ("Reasons", "Motifs", "الأسباب"),
    "delist_requested": (
        "Delisting requested",
        "Retrait demandé",
        "طُلبت الإزالة من القائمة",
    ),
    "own_request": (
        "You asked for this: another approver must confirm or reject it.",
        "Vous l'avez demandé : un autre approbateur doit confirmer ou rejeter.",
        "أنت طلبت هذا: يجب أن يؤكده موافق آخر أو يرفضه.",
    ),
    "own_entry": (
        "You added this entry: another approver must decide on it.",
        "Vous avez ajouté cette entrée : un autre approbateur doit décider.",
        "أنت أضفت هذا الإدخال: يجب أن يقرر فيه موافق آخر.",
    ),
    "history": ("History", "Historique", "السجل"),
    "checks": ("Liveness checks", "Vérifications de présence", "فحوص التوفر"),
    "entry": ("Entry", "Entrée", "إدخال"),
    "done": ("Done.", "Fait.", "تم."),
    "refused": ("Refused", "Refusé", "مرفوض"),
    "import_lines": (
        "One address per line: address, hosting country, evidence reference (comma-separated)",
        "Une adresse par ligne : adresse, pays d'hébergement, référence de preuve (séparés par "
        "des virgules)",
        "عنوان في كل سطر: العنوان، بلد الاستضافة، مرجع الدليل (مفصولة بفواصل)",
    ),
    "source": ("Source", "Source", "المصدر"),
    "preview": ("Preview", "Aperçu", "معاينة"),
    "submit_batch": ("Submit the batch", "Soumettre le lot", "إرسال الدفعة"),
    "accepted_lines": ("Lines accepted", "Lignes acceptées", "الأسطر المقبولة"),
    "refused_lines": ("Lines refused", "Lignes refusées", "الأسطر المرفوضة"),
    "line": ("Line", "Ligne", "السطر"),
    "batch_created": ("Batch", "Lot", "الدفعة"),
    "to_add": ("To add", "À ajouter", "للإضافة"),
    "to_remove": ("To remove", "À retirer", "للإزالة"),
    "publish_now": ("Publish now", "Publier maintenant", "انشر الآن"),
    "nothing_to_publish": (
        "Nothing to publish.",
        "Rien à publier.",
        "لا شيء للنشر.",
    ),
    "published": ("Published serial", "Numéro publié", "نُشر الرقم"),
    "host": ("Host", "Hôte", "المضيف"),
    "role": ("Role", "Rôle", "الدور"),
    "received": ("Received", "Reçue", "استلمت"),
    "decision": ("Decision", "Décision", "القرار"),
    "upheld": ("Upheld (delist)", "Fondée (retirer)", "مقبولة (إزالة)"),
    "rejected": ("Rejected", "Rejetée", "مرفوضة"),
    "decide": ("Decide", "Décider", "قرر"),
    "complaint": ("Complaint", "Réclamation", "شكوى"),
    "takedowns": ("Takedowns", "Retraits", "الإزالات"),
    "deadline": ("Deadline", "Échéance", "المهلة"),
    "confirm_removal": (
        "Confirm removal at source",
        "Confirmer le retrait à la source",
        "تأكيد الإزالة من المصدر",
    ),
    "reverify": ("Re-verified", "Revérifiée", "أعيد التحقق"),
    "run_checks": ("Run due checks now", "Lancer les vérifications dues", "شغّل الفحوص المستحقة"),
    "removal_pending": (
        "Found gone, awaiting confirmation",
        "Disparues, en attente de confirmation",
        "اختفت، بانتظار التأكيد",
    ),
    "asp": ("ASP", "FAI", "المزود"),
    "instance": ("Instance", "Instance", "النسخة"),
    "lag": ("Serials behind", "Numéros de retard", "أرقام التأخر"),
    "overdue": ("Overdue", "En retard", "متأخر"),
    "alarms": ("Alarms", "Alertes", "الإنذارات"),
    "yes": ("yes", "oui", "نعم"),
    "no": ("no", "non", "لا"),
    "chain_ok": (
        "Audit chain verified",
        "Chaîne d'audit vérifiée",
        "تم التحقق من سلسلة التدقيق",
    ),
    "chain_broken": (
        "Audit chain BROKEN",
        "Chaîne d'audit ROMPUE",
        "سلسلة التدقيق مكسورة",
    ),
    "records": ("Records", "Enregistrements", "السجلات"),
    "time": ("Time", "Heure", "الوقت"),
    "actor": ("Actor", "Auteur", "الفاعل"),
    "action": ("Action", "Action", "الإجراء"),
    "detail": ("Detail", "Détail", "التفاصيل"),
    "create_officer": ("Create an officer", "Créer un agent", "إنشاء موظف"),
    "create": ("Create", "Créer", "إنشاء"),
    "confirm": ("Confirm", "Confirmer", "تأكيد"),
    "change_role": ("Change role", "Changer de rôle", "تغيير الدور"),
    "deactivate": ("Deactivate", "Désactiver", "تعطيل"),
    "reset_sign_in": (
        "New setup code",
        "Nouveau code de configuration",
        "رمز إعداد جديد",
    ),
    "active": ("Active", "Actif", "نشط"),
    "awaiting_confirmation": (
        "awaiting a second admin's confirmation",
        "en attente de la confirmation d'un second administrateur",
        "بانتظار تأكيد مسؤول ثانٍ",
    ),
    "console_enrolled": ("Console sign-in", "Connexion console", "دخول الوحدة"),
    "shown_once": (
        "Shown once: give it to the officer in person.",
        "Affiché une seule fois : remettez-le à l'agent en personne.",
        "يُعرض مرة واحدة: سلّمه للموظف شخصيًا.",
    ),
    "api_token": ("API token", "Jeton d'API", "رمز الواجهة"),
    "charts": ("Charts", "Graphiques", "الرسوم البيانية"),
    "chart_size": (
        "List size and changes per serial",
        "Taille de la liste et changements par numéro",
        "حجم القائمة والتغييرات لكل رقم",
    ),
    "chart_removal": (
        "Median hours from listing to removal at source, by month",
        "Heures médianes entre inscription et retrait à la source, par mois",
        "الساعات الوسيطة من الإدراج إلى الإزالة من المصدر، حسب الشهر",
    ),
    "chart_complaints": (
        "Complaints by outcome",
        "Réclamations par issue",
        "الشكاوى حسب النتيجة",
    ),
    "chart_lag": (
        "Serials behind, per ASP instance (latest acknowledgement)",
        "Numéros de retard par instance de FAI (dernier accusé)",
        "أرقام التأخر لكل نسخة مزود (آخر إقرار)",
    ),
    "no_data": ("No data yet.", "Pas encore de données.", "لا توجد بيانات بعد."),
    "error": ("Refused", "Refusé", "مرفوض"),
    "page_not_found": ("Not found", "Introuvable", "غير موجود"),
    "csrf": (
        "The form expired or did not come from this console; reload the page and try again.",
        "Le formulaire a expiré ou ne vient pas de cette console ; rechargez la page.",
        "انتهت صلاحية النموذج أو لم يأت من هذه الوحدة؛ أعد تحميل الصفحة.",
    ),
    "hidden_value": ("(hidden)", "(masquée)", "(مخفي)"),
    "previous_page": ("Previous", "Précédent", "السابق"),
    "next_page": ("Next", "Suivant", "التالي"),
}


def pick(accept: str | None, asked: str | None, cookie: str | None) -> str:
    """The language: asked in the query, else the cookie, else Accept-Language, else English."""
    for choice in (asked, cookie):
        if choice in LANGUAGES:
            return choice
    for part in (accept or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return "en"


def translator(lang: str):
    index = LANGUAGES.index(lang)

    def t(key: str) -> str:
        words = CATALOGUE.get(key)
        if words is None:
            return key
        return words[index] or words[0]

    return t
